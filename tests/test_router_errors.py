"""What ``litellm.Router`` does with the plugin's errors, on its default retries and cooldowns.

Real Router, real plugin, the loopback token server and gateway. A token failure that will not
heal by itself (``invalid_client``, ``invalid_scope``, a broken configuration) is neither retried
nor puts the deployment in cooldown; one that may heal (the identity provider answering 503) may
be retried, within the Router's ``num_retries``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import (
    OAuth2AuthenticationError,
    OAuth2ConfigurationError,
    OAuth2Handler,
    OAuth2ProviderError,
    find_oauth2_error,
)
from litellm_oauth2.cache import NEGATIVE_CACHE_SECONDS
from litellm_oauth2.testing import OpenAIUpstream, TokenServer

MESSAGES = [{"role": "user", "content": "hello"}]
WRONG_SECRET = "not-the-secret"
NO_RETRY = {"attempts": 0, "initial_delay": 0, "max_delay": 0}


class Setup:
    def __init__(self, tokens: TokenServer, upstream: OpenAIUpstream, handler: OAuth2Handler) -> None:
        self.tokens = tokens
        self.upstream = upstream
        self.handler = handler


def make(**overrides: Any) -> Iterator[Setup]:
    with TokenServer() as tokens, OpenAIUpstream(tokens) as upstream:
        tokens.add_client("test-client", SECRET)
        settings = provider_dict(tokens.token_url, api_base=upstream.base_url, retry=NO_RETRY, **overrides)
        handler = OAuth2Handler(config=config_of({"gw": settings}))
        try:
            yield Setup(tokens, upstream, handler)
        finally:
            handler.close()


@pytest.fixture
def wrong_secret() -> Iterator[Setup]:
    yield from make(client_secret=WRONG_SECRET)


def default_router(deployments: int = 1) -> litellm.Router:
    """The Router as users build it: default retries (2) and cooldowns."""
    return litellm.Router(
        model_list=[
            {
                "model_name": "chat",
                "litellm_params": {"model": "gw/chat-model"},
                "model_info": {"id": f"d{i}"},
            }
            for i in range(deployments)
        ]
    )


def call(router: litellm.Router, *, is_async: bool) -> Any:
    if is_async:
        return asyncio.run(router.acompletion(model="chat", messages=MESSAGES))
    return router.completion(model="chat", messages=MESSAGES)


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
def test_the_router_does_not_retry_invalid_client(wrong_secret: Setup, is_async: bool) -> None:
    with pytest.raises(OAuth2ProviderError, match="invalid_client") as info:
        call(default_router(), is_async=is_async)
    assert wrong_secret.tokens.token_requests == 1, "the Router retried a refused client"
    assert info.value.error == "invalid_client" and info.value.transient is False
    assert wrong_secret.upstream.requests == 0
    assert WRONG_SECRET not in str(info.value)


def test_the_router_does_not_retry_invalid_scope() -> None:
    for setup in make(scope="not-granted"):
        setup.tokens.add_client("test-client", SECRET, allowed_scopes={"granted"})
        with pytest.raises(OAuth2ProviderError, match="invalid_scope"):
            call(default_router(), is_async=False)
        assert setup.tokens.token_requests == 1
        assert setup.upstream.requests == 0


def test_with_two_deployments_of_one_provider_a_refused_client_is_asked_for_once(wrong_secret: Setup) -> None:
    """The Router may try the group's other deployment (another provider may accept it); the
    cache answers that try from its memory of the failure, without asking the token endpoint."""
    with pytest.raises(OAuth2ProviderError, match="invalid_client"):
        call(default_router(deployments=2), is_async=False)
    assert wrong_secret.tokens.token_requests == 1
    assert wrong_secret.upstream.requests == 0


@pytest.mark.parametrize("is_async", [False, True], ids=["completion", "acompletion"])
def test_a_permanent_failure_leaves_the_deployment_out_of_cooldown(
    wrong_secret: Setup, is_async: bool
) -> None:
    router = default_router()
    with pytest.raises(OAuth2ProviderError, match="invalid_client"):
        call(router, is_async=is_async)
    wrong_secret.tokens.add_client("test-client", WRONG_SECRET)  # the client is registered as configured
    time.sleep(NEGATIVE_CACHE_SECONDS + 0.1)  # past the cache's memory of the failure
    response = call(router, is_async=is_async)
    assert response.choices[0].message.content
    assert wrong_secret.tokens.token_requests == 2
    assert wrong_secret.upstream.authorized_requests == 1


def test_an_identity_provider_that_is_down_may_be_retried_within_num_retries() -> None:
    for setup in make():
        setup.tokens.fail_next(100, status=503)
        router = default_router()
        with pytest.raises(OAuth2ProviderError, match="503") as info:
            call(router, is_async=False)
        assert info.value.transient is True and isinstance(info.value, litellm.APIConnectionError)
        retried = setup.tokens.token_requests
        print(f"IdP 503 through a default Router: {retried} token requests")
        assert 1 <= retried <= 3, "at most the Router's 1 + num_retries (2) calls"
        assert setup.upstream.requests == 0
        setup.tokens.reset()
        time.sleep(NEGATIVE_CACHE_SECONDS + 0.1)
        assert call(router, is_async=False).choices[0].message.content, "the deployment was cooled down"


# -- the classes ---------------------------------------------------------------------------------


def test_permanent_and_transient_errors_are_litellm_classes_the_router_treats_apart() -> None:
    permanent = OAuth2ProviderError(
        OAuth2AuthenticationError("refused", provider="gw", error="invalid_client", transient=False), "gw/m"
    )
    transient = OAuth2ProviderError(OAuth2AuthenticationError("down", provider="gw", http_status=503), "gw/m")
    configuration = OAuth2ProviderError(OAuth2ConfigurationError("bad field", provider="gw"), "gw/m")
    assert type(permanent).__name__ == "OAuth2ClientRejectedError"
    assert type(transient).__name__ == "OAuth2TokenUnavailableError"
    assert type(configuration).__name__ == "OAuth2ProviderConfigurationError"
    for error in (permanent, configuration):
        assert isinstance(error, litellm.CallerCredentialAuthenticationError)
        assert not isinstance(error, litellm.APIConnectionError)
        assert error.transient is False
    assert isinstance(transient, litellm.APIConnectionError) and transient.transient is True
    assert isinstance(configuration, OAuth2ConfigurationError)
    for error in (permanent, transient, configuration):
        assert isinstance(error, OAuth2ProviderError) and isinstance(error, OAuth2AuthenticationError)
        assert find_oauth2_error(error) is error and error.provider == "gw"
        assert str(error) == error.message and "litellm." not in str(error)
        # LiteLLM's exception mapping hands its own exception classes back unchanged.
        mapped = litellm.litellm_core_utils.exception_mapping_utils.exception_type(
            model="gw/m", original_exception=error, custom_llm_provider="gw"
        )
        assert mapped is error
