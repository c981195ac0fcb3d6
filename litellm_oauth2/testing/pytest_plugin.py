"""Opt-in pytest fixtures: enable with ``pytest_plugins = ["litellm_oauth2.testing.pytest_plugin"]``.

Not registered as an entry point, so installing the package never changes anyone's test runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer

__all__ = [
    "TEST_CLIENT_ID",
    "TEST_CLIENT_SECRET",
    "anthropic_upstream",
    "azure_openai_upstream",
    "oauth2_token_server",
    "openai_upstream",
]

TEST_CLIENT_ID = "test-client"
TEST_CLIENT_SECRET = "test-secret"


@pytest.fixture
def oauth2_token_server() -> Iterator[TokenServer]:
    """A running ``TokenServer`` with client ``test-client`` / ``test-secret`` registered."""
    with TokenServer() as server:
        server.add_client(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
        yield server


@pytest.fixture
def openai_upstream(oauth2_token_server: TokenServer) -> Iterator[OpenAIUpstream]:
    """A running ``OpenAIUpstream`` accepting tokens from ``oauth2_token_server``."""
    with OpenAIUpstream(oauth2_token_server) as upstream:
        yield upstream


@pytest.fixture
def azure_openai_upstream(oauth2_token_server: TokenServer) -> Iterator[AzureOpenAIUpstream]:
    """A running ``AzureOpenAIUpstream`` accepting tokens from ``oauth2_token_server``."""
    with AzureOpenAIUpstream(oauth2_token_server) as upstream:
        yield upstream


@pytest.fixture
def anthropic_upstream(oauth2_token_server: TokenServer) -> Iterator[AnthropicUpstream]:
    """A running ``AnthropicUpstream`` accepting tokens from ``oauth2_token_server``."""
    with AnthropicUpstream(oauth2_token_server) as upstream:
        yield upstream
