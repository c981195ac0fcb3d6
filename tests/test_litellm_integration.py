"""Real LiteLLM calls through the plugin to the loopback gateway, which verifies every bearer JWT."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from litellm.integrations.custom_logger import CustomLogger

from litellm_oauth2 import (
    OAuth2AuthenticationError,
    OAuth2Handler,
    OAuth2ProviderError,
    enable,
    find_oauth2_error,
)
from litellm_oauth2.testing import OpenAIUpstream, TokenServer

MESSAGES = [{"role": "user", "content": "hello"}]
CALLER_KEY = "sk-caller-KNOWN-key"


class Gateway:
    """A token server and an OpenAI-compatible upstream that trusts it, with a handler for them."""

    def __init__(self, token_server: TokenServer, upstream: OpenAIUpstream, handler: OAuth2Handler) -> None:
        self.tokens = token_server
        self.upstream = upstream
        self.handler = handler

    def assert_all_requests_authorized(self, client_id: str = "test-client") -> None:
        assert self.upstream.requests > 0
        for request in self.upstream.recorded:
            authorization = request.headers.get("authorization", "")
            assert authorization.startswith("Bearer "), "a request reached the gateway without a bearer token"
            claims = self.tokens.verify_access_token(authorization.removeprefix("Bearer "))
            assert claims is not None and claims["sub"] == client_id
            assert CALLER_KEY not in str(request.headers)
            assert request.headers.get("x-team") == "blue"


def make_gateway(name: str = "gw", **overrides: Any) -> Iterator[Gateway]:
    with TokenServer() as token_server, OpenAIUpstream(token_server) as upstream:
        token_server.add_client("test-client", SECRET)
        settings = provider_dict(
            token_server.token_url, api_base=upstream.base_url, headers={"X-Team": "blue"}, **overrides
        )
        handler = OAuth2Handler(config=config_of({name: settings}))
        try:
            yield Gateway(token_server, upstream, handler)
        finally:
            handler.close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    yield from make_gateway()


def drain(stream: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


async def adrain(stream: Any) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def router(model: str = "gw/chat-model") -> litellm.Router:
    # No Router-level retries: the plugin's own 401 retry is what these tests count.
    return litellm.Router(
        model_list=[
            {"model_name": "chat", "litellm_params": {"model": model}},
            {"model_name": "embed", "litellm_params": {"model": "gw/embed-model"}},
        ],
        num_retries=0,
    )


CallPath = Callable[[], Any]
PATHS: dict[str, CallPath] = {
    "completion": lambda: litellm.completion(model="gw/chat-model", messages=MESSAGES, api_key=CALLER_KEY),
    "completion positional": lambda: litellm.completion("gw/chat-model", MESSAGES),
    "completion stream": lambda: drain(
        litellm.completion(model="gw/chat-model", messages=MESSAGES, stream=True)
    ),
    "acompletion": lambda: run(
        litellm.acompletion(model="gw/chat-model", messages=MESSAGES, api_key=CALLER_KEY)
    ),
    "acompletion stream": lambda: run(
        adrain_call(litellm.acompletion(model="gw/chat-model", messages=MESSAGES, stream=True))
    ),
    "embedding": lambda: litellm.embedding(model="gw/embed-model", input=["a", "b"], api_key=CALLER_KEY),
    "aembedding": lambda: run(litellm.aembedding(model="gw/embed-model", input=["a"])),
    "extra_headers credential": lambda: litellm.completion(
        model="gw/chat-model", messages=MESSAGES, extra_headers={"Authorization": f"Bearer {CALLER_KEY}"}
    ),
    "Router.completion": lambda: router().completion(model="chat", messages=MESSAGES),
    "Router stream": lambda: drain(router().completion(model="chat", messages=MESSAGES, stream=True)),
    "Router.acompletion": lambda: run(router().acompletion(model="chat", messages=MESSAGES)),
    "Router astream": lambda: run(
        adrain_call(router().acompletion(model="chat", messages=MESSAGES, stream=True))
    ),
    "Router.embedding": lambda: router().embedding(model="embed", input=["a"]),
    "Router.aembedding": lambda: run(router().aembedding(model="embed", input=["a"])),
}


async def adrain_call(call: Awaitable[Any]) -> str:
    return await adrain(await call)


def response_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    if hasattr(result, "choices"):
        return str(result.choices[0].message.content)
    return str(len(result.data))


@pytest.mark.parametrize("path", PATHS)
def test_every_call_path_sends_the_providers_bearer_token(gateway: Gateway, path: str) -> None:
    text = response_text(PATHS[path]())
    assert text == "Hello from upstream (client_id=test-client)" or text.isdigit()
    gateway.assert_all_requests_authorized()
    assert gateway.tokens.token_requests == 1


def test_several_providers_route_to_their_own_gateway_with_their_own_token() -> None:
    gateways = [make_gateway(name) for name in ("alpha", "beta")]
    alpha, beta = (next(g) for g in gateways)
    try:
        alpha.tokens.add_client("alpha-client", SECRET)
        litellm.completion(model="alpha/m", messages=MESSAGES)
        litellm.completion(model="beta/m", messages=MESSAGES)
        litellm.completion(model="beta/m", messages=MESSAGES)
        assert (alpha.upstream.requests, beta.upstream.requests) == (1, 2)
        assert (alpha.tokens.token_requests, beta.tokens.token_requests) == (1, 1)
        alpha.assert_all_requests_authorized()
        beta.assert_all_requests_authorized()
    finally:
        for generator in gateways:
            generator.close()


@pytest.mark.parametrize(
    "path",
    [
        "completion",
        "completion stream",
        "acompletion",
        "acompletion stream",
        "embedding",
        "Router.acompletion",
    ],
)
def test_a_401_is_recovered_with_one_new_token(gateway: Gateway, path: str) -> None:
    PATHS[path]()
    gateway.upstream.reset()
    first_token = gateway.handler.get_token("gw")
    gateway.upstream.fail_next(1, 401)
    PATHS[path]()
    assert gateway.upstream.requests == 2
    assert gateway.tokens.token_requests == 2
    assert gateway.handler.get_token("gw") != first_token


@pytest.mark.parametrize("path", ["completion", "acompletion stream", "Router.completion"])
def test_a_second_401_surfaces_as_litellm_authentication_error(gateway: Gateway, path: str) -> None:
    gateway.upstream.fail_next(2, 401)
    with pytest.raises(litellm.AuthenticationError) as info:
        PATHS[path]()
    assert gateway.upstream.requests == 2
    assert gateway.handler.get_token("gw") not in str(info.value)


def test_a_recovered_401_does_not_cool_the_router_deployment_down(gateway: Gateway) -> None:
    shared_router = router()
    gateway.upstream.fail_next(1, 401)
    shared_router.completion(model="chat", messages=MESSAGES)
    shared_router.completion(model="chat", messages=MESSAGES)
    assert gateway.upstream.requests == 3


def test_403_insufficient_scope_is_not_retried(gateway: Gateway) -> None:
    gateway.upstream.fail_next(1, 403, error="insufficient_scope")
    # LiteLLM's openai/ route reports a 403 as APIError (1.110) or PermissionDeniedError: the status says it.
    with pytest.raises((litellm.exceptions.APIError, litellm.exceptions.PermissionDeniedError)) as raised:
        litellm.completion(model="gw/chat-model", messages=MESSAGES)
    assert raised.value.status_code == 403
    assert gateway.upstream.requests == 1
    assert gateway.tokens.token_requests == 1


FAILING_PATHS = [
    "completion",
    "completion stream",
    "acompletion",
    "acompletion stream",
    "embedding",
    "aembedding",
    "Router.completion",
    "Router.acompletion",
    "Router astream",
    "Router.embedding",
]


@pytest.mark.parametrize("path", FAILING_PATHS)
def test_token_endpoint_down_raises_oauth2_error_and_sends_nothing(path: str) -> None:
    for gateway in make_gateway(retry={"attempts": 1, "initial_delay": 0, "max_delay": 0}):
        gateway.tokens.fail_next(100, status=503)
        with pytest.raises(Exception) as info:
            PATHS[path]()
        assert isinstance(info.value, OAuth2AuthenticationError), f"caller got {type(info.value).__name__}"
        assert isinstance(info.value, litellm.APIConnectionError)
        assert find_oauth2_error(info.value) is info.value
        assert "gw" in str(info.value) and "503" in str(info.value)
        assert gateway.upstream.requests == 0


def test_wrong_client_secret_says_invalid_client() -> None:
    for gateway in make_gateway(client_secret="not-the-secret"):
        with pytest.raises(OAuth2ProviderError, match="invalid_client") as info:
            litellm.completion(model="gw/chat-model", messages=MESSAGES)
        assert info.value.error == "invalid_client" and info.value.provider == "gw"
        assert "not-the-secret" not in str(info.value)
        assert gateway.upstream.requests == 0


def test_cold_crowd_of_100_acompletions_makes_one_token_request(gateway: Gateway) -> None:
    gateway.tokens.delay_next(1, 0.3)

    async def crowd() -> list[Any]:
        return await asyncio.gather(
            *(litellm.acompletion(model="gw/chat-model", messages=MESSAGES) for _ in range(100))
        )

    results = asyncio.run(crowd())
    assert len(results) == 100
    assert gateway.tokens.token_requests == 1
    assert gateway.upstream.requests == 100
    gateway.assert_all_requests_authorized()


def test_enable_registers_one_handler_per_process(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for gateway in make_gateway():
        import json

        path = tmp_path / "litellm_config.json"
        path.write_text(
            json.dumps(
                {
                    "oauth2_providers": {
                        "gw": provider_dict(gateway.tokens.token_url, api_base=gateway.upstream.base_url)
                    }
                }
            )
        )
        monkeypatch.setattr(litellm, "callbacks", [])
        first = enable(path)
        second = enable(path)
        assert first is second
        assert litellm.callbacks.count(first) == 1
        litellm.callbacks = []  # user code replacing callbacks keeps the routing alive
        litellm.completion(model="gw/chat-model", messages=MESSAGES)
        assert gateway.upstream.requests == 1


def test_handler_exposes_raw_tokens(gateway: Gateway) -> None:
    token = gateway.handler.get_token("gw")
    assert gateway.tokens.verify_access_token(token) is not None
    assert run(gateway.handler.aget_token("gw")) == token


# -- leaks -------------------------------------------------------------------------------------


class Recorder(CustomLogger):
    """Another callback in the app, as a logging vendor would see the calls."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def _record(self, kwargs: Any, response: Any) -> None:
        self.seen.append(repr(kwargs))
        self.seen.append(repr(response))

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self._record(kwargs, None)

    def log_post_api_call(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._record(kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._record(kwargs, response_obj)


def test_no_secret_or_token_in_logs_callbacks_or_errors(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(litellm, "callbacks", [recorder])
    monkeypatch.setenv("LITELLM_DISABLE_REDACT_SECRETS", "true")
    caplog.set_level(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    errors: list[str] = []
    litellm._turn_on_debug()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            for path in ["completion", "completion stream", "acompletion", "acompletion stream", "embedding"]:
                PATHS[path]()
            gateway.upstream.fail_next(1, 401)
            PATHS["completion"]()
            for path in ["completion", "acompletion", "completion stream"]:
                gateway.upstream.fail_next(2, 401)
                try:
                    PATHS[path]()
                except Exception as exc:
                    errors += [str(exc), repr(exc)]
            gateway.handler.cache.invalidate("gw")
            gateway.tokens.fail_next(20, status=401, error="invalid_client")
            for path in ["completion", "acompletion"]:
                try:
                    PATHS[path]()
                except Exception as exc:
                    errors += [str(exc), repr(exc), repr(getattr(exc, "original_error", None))]
    finally:
        litellm._logging._disable_debugging()
        litellm.set_verbose = False
    texts = [out.getvalue(), err.getvalue(), *recorder.seen, *errors]
    texts += [record.getMessage() for record in caplog.records]
    assert len(recorder.seen) >= 10, "the recording callback saw no calls"
    assert len(errors) >= 6
    secrets = {
        "client secret": SECRET,
        **{f"token {i}": t for i, t in enumerate(gateway.tokens.issued_tokens)},
    }
    assert len(secrets) >= 3
    leaked = sorted({label for label, secret in secrets.items() for text in texts if secret in text})
    assert not leaked, f"leaked into logs, callback kwargs or errors: {leaked}"


@pytest.fixture(autouse=True)
def _quiet_litellm() -> Iterator[None]:
    litellm.suppress_debug_info = True
    yield
    sys.stdout.flush()


def test_handler_reports_stats_and_health_of_real_calls(gateway: Gateway) -> None:
    """The handler's stats and health are the cache's, counted on real LiteLLM calls, with a 401
    refetch among them."""
    handler = gateway.handler
    litellm.completion(model="gw/chat-model", messages=MESSAGES)
    gateway.upstream.fail_next(1, 401)
    litellm.completion(model="gw/chat-model", messages=MESSAGES)

    stats = handler.stats()["gw"]
    health = handler.health()["gw"]
    assert stats.token_requests["ok"] == gateway.tokens.token_requests == 2
    assert stats.refetches_after_401 == 1
    assert health.healthy and health.seconds_until_expiry is not None and health.seconds_until_expiry > 0
