"""Real loopback HTTP servers for tests, the CLI demo and users' own test suites.

``TokenServer`` is an OAuth2 token endpoint with fault injection; ``OpenAIUpstream`` is an
OpenAI-compatible gateway that only answers requests bearing its tokens.
"""

from ._http import RecordedRequest
from .token_server import TokenServer
from .upstream import OpenAIUpstream

__all__ = ["OpenAIUpstream", "RecordedRequest", "TokenServer"]
