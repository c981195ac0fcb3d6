"""Real loopback HTTP servers for tests, the CLI demo and users' own test suites.

``TokenServer`` is an OAuth2 token endpoint with fault injection. The gateways answer only
requests bearing its tokens (or a ``static_api_key``), record every request and inject faults
(see ``BearerGateway``): ``OpenAIUpstream`` speaks the OpenAI API under ``/v1``,
``AzureOpenAIUpstream`` Azure OpenAI's deployment and v1 layouts with their ``api-version``
check, ``AnthropicUpstream`` Anthropic's Messages API. Point a client's ``api_base`` at
``gateway.base_url``.
"""

from ._gateway import BearerGateway
from ._http import FormFile, RecordedRequest
from .anthropic import AnthropicUpstream
from .azure import AzureOpenAIUpstream
from .token_server import TokenServer
from .upstream import OpenAIUpstream

__all__ = [
    "AnthropicUpstream",
    "AzureOpenAIUpstream",
    "BearerGateway",
    "FormFile",
    "OpenAIUpstream",
    "RecordedRequest",
    "TokenServer",
]
