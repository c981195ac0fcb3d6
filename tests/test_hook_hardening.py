"""The request hook under real services: context isolation, the event loop, gateway error text.

Real LiteLLM calls against loopback token servers and gateways that accept only their own
token server's tokens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from litellm.integrations.custom_logger import CustomLogger

from litellm_oauth2 import OAuth2Handler, OAuth2ProviderError
from litellm_oauth2.testing import OpenAIUpstream, TokenServer
from litellm_oauth2.testing._http import LoopbackServer, RecordedRequest, Response, json_response

MESSAGES = [{"role": "user", "content": "hello"}]
SUBSCRIPTION_KEY = f"sub-{SECRET}"
IDP_DELAY = 0.5


class _Site:
    """A token server and a gateway that accepts only its tokens."""

    def __init__(self, tokens: TokenServer, upstream: OpenAIUpstream, client_id: str) -> None:
        self.tokens = tokens
        self.upstream = upstream
        self.client_id = client_id

    def settings(self, **overrides: Any) -> dict[str, Any]:
        return provider_dict(
            self.tokens.token_url, client_id=self.client_id, api_base=self.upstream.base_url, **overrides
        )

    def assert_only_own_tokens(self) -> None:
        assert self.upstream.recorded, "the gateway saw no request"
        for request in self.upstream.recorded:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            claims = self.tokens.verify_access_token(token)
            assert claims is not None and claims["sub"] == self.client_id, "another provider's token arrived"


def _site(tokens: TokenServer, client_id: str) -> Iterator[_Site]:
    tokens.add_client(client_id, SECRET)
    with OpenAIUpstream(tokens) as upstream:
        yield _Site(tokens, upstream, client_id)


async def _adrain(stream: Any) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


# -- 1. a request hook only ever sends its own provider's token ------------------------------------


class _CallsAnotherProvider(CustomLogger):
    """A synchronous callback that runs an async ``beta/...`` call with ``asyncio.run`` (a Celery
    task, a sync SDK bridging to async), inside an ``alpha/...`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.outcome: Any = None

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        if self.outcome is None and str(model).endswith("alpha-model"):
            self.outcome = "running"
            try:
                reply = asyncio.run(litellm.acompletion(model="beta/beta-model", messages=MESSAGES))
                self.outcome = reply.choices[0].message.content
            except Exception as exc:  # reported by the test
                self.outcome = exc


def test_a_call_started_inside_another_providers_call_sends_its_own_token() -> None:
    with TokenServer() as idp_a, TokenServer() as idp_b:
        alpha = next(sites_a := _site(idp_a, "alpha-client"))
        beta = next(sites_b := _site(idp_b, "beta-client"))
        handler = OAuth2Handler(config=config_of({"alpha": alpha.settings(), "beta": beta.settings()}))
        callback = _CallsAnotherProvider()
        litellm.callbacks.append(callback)
        try:
            reply = litellm.completion(model="alpha/alpha-model", messages=MESSAGES)

            assert reply.choices[0].message.content == "Hello from upstream (client_id=alpha-client)"
            assert callback.outcome == "Hello from upstream (client_id=beta-client)", repr(callback.outcome)
            alpha.assert_only_own_tokens()
            beta.assert_only_own_tokens()
            assert beta.upstream.requests == 1  # no 401 and retry: the right token went out first
        finally:
            litellm.callbacks.remove(callback)
            handler.close()
            sites_a.close()
            sites_b.close()


# -- 2. no token is fetched synchronously on an event-loop thread ----------------------------------


class _WatchedIdP(TokenServer):
    """A slow token endpoint that counts the event loop's heartbeats while it holds each request."""

    def __init__(self) -> None:
        super().__init__()
        self.beats = 0
        self.beats_during_requests: list[int] = []
        self.slow = False

    def respond(self, request: RecordedRequest) -> Response:
        if not request.path.startswith("/token"):
            return super().respond(request)
        before = self.beats
        if self.slow:
            self.sleep(IDP_DELAY)
        response = super().respond(request)
        self.beats_during_requests.append(self.beats - before)
        return response


async def _heartbeat(idp: _WatchedIdP, stop: asyncio.Event) -> None:
    while not stop.is_set():
        idp.beats += 1
        await asyncio.sleep(0.005)


@pytest.fixture
def watched() -> Iterator[tuple[_WatchedIdP, OpenAIUpstream, OAuth2Handler]]:
    with _WatchedIdP() as idp, OpenAIUpstream(idp) as upstream:
        idp.add_client("test-client", SECRET)
        handler = OAuth2Handler(
            config=config_of({"gw": provider_dict(idp.token_url, api_base=upstream.base_url)})
        )
        try:
            yield idp, upstream, handler
        finally:
            handler.close()


def test_async_stream_never_fetches_a_token_on_the_event_loop(
    watched: tuple[_WatchedIdP, OpenAIUpstream, OAuth2Handler],
) -> None:
    idp, upstream, handler = watched

    async def scenario() -> str:
        await litellm.acompletion(model="gw/m", messages=MESSAGES)
        # Before the stream's request: the token was dropped, the gateway will refuse the next
        # request once, and the identity provider has become slow. Both fetches (at the call and
        # after the 401) must leave the loop running.
        handler.cache.invalidate("gw")
        upstream.fail_next(1, 401)
        idp.slow = True
        stop = asyncio.Event()
        beating = asyncio.create_task(_heartbeat(idp, stop))
        try:
            stream = await litellm.acompletion(model="gw/m", messages=MESSAGES, stream=True)
            return await asyncio.wait_for(_adrain(stream), timeout=60)
        finally:
            stop.set()
            await beating

    text = asyncio.run(scenario())

    assert text == "Hello from upstream (client_id=test-client)"
    # The first call's token, then the stream's; the 401 came within REFETCH_AFTER_401_SECONDS of
    # the drop, so the retry went out with the same, just fetched, token.
    assert idp.token_requests == 2
    assert upstream.requests == 3
    # The loop kept running while the slow token request was outstanding.
    beats = idp.beats_during_requests
    assert len(beats) == 2 and beats[1] >= 2, beats


def test_async_stream_token_failure_is_the_plugins_error(
    watched: tuple[_WatchedIdP, OpenAIUpstream, OAuth2Handler],
) -> None:
    idp, upstream, handler = watched

    async def scenario() -> BaseException:
        await litellm.acompletion(model="gw/m", messages=MESSAGES)
        handler.cache.invalidate("gw")
        idp.fail_next(20, status=503)
        try:
            stream = await litellm.acompletion(model="gw/m", messages=MESSAGES, stream=True)
            await asyncio.wait_for(_adrain(stream), timeout=60)
        except Exception as exc:
            return exc
        raise AssertionError("the stream succeeded with the identity provider down")

    raised = asyncio.run(scenario())

    assert isinstance(raised, OAuth2ProviderError), repr(raised)
    assert raised.provider == "gw"
    assert upstream.requests == 1  # the first call; no request went out without a token
    assert "503" in str(raised) or "server_error" in str(raised), str(raised)


def test_astreaming_called_on_an_event_loop_leaves_the_token_to_the_stream(
    watched: tuple[_WatchedIdP, OpenAIUpstream, OAuth2Handler],
) -> None:
    idp, _, handler = watched

    async def scenario() -> int:
        # LiteLLM calls astreaming from its executor thread; were it called on the loop, the
        # token must not be fetched there synchronously: the stream awaits it when iterated.
        stream = handler.providers["gw"].astreaming(model="gw/m")
        requested = idp.token_requests
        await stream.aclose()  # type: ignore[attr-defined]
        return requested

    assert asyncio.run(scenario()) == 0


# -- 6. a gateway echoing the request back cannot put credentials into error text ------------------


class _EchoingGateway(LoopbackServer):
    """A gateway whose error body quotes every request header (a debug page, a verbose WAF)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0
        self._lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> Response:
        with self._lock:
            self.seen += 1
        echoed = json.dumps(request.headers)
        return json_response(
            400, {"error": {"message": f"bad request, you sent {echoed}", "type": "invalid"}}
        )


ECHO_PATHS = {
    "completion": lambda: litellm.completion(model="echo/m", messages=MESSAGES),
    "completion stream": lambda: list(litellm.completion(model="echo/m", messages=MESSAGES, stream=True)),
    "embedding": lambda: litellm.embedding(model="echo/e", input=["x"]),
    "acompletion": lambda: asyncio.run(litellm.acompletion(model="echo/m", messages=MESSAGES)),
    "acompletion stream": lambda: asyncio.run(
        _adrain_call(litellm.acompletion(model="echo/m", messages=MESSAGES, stream=True))
    ),
    "aembedding": lambda: asyncio.run(litellm.aembedding(model="echo/e", input=["x"])),
}


async def _adrain_call(call: Any) -> str:
    return await _adrain(await call)


@pytest.mark.parametrize("path", ECHO_PATHS)
def test_gateway_error_text_has_no_header_value_or_token(path: str) -> None:
    with TokenServer() as idp, _EchoingGateway() as gateway:
        idp.add_client("test-client", SECRET)
        settings = provider_dict(
            idp.token_url,
            api_base=gateway.url + "/v1",
            headers={"Ocp-Apim-Subscription-Key": SUBSCRIPTION_KEY, "X-Team": "blue"},
        )
        handler = OAuth2Handler(config=config_of({"echo": settings}))
        try:
            with pytest.raises(Exception) as info:
                ECHO_PATHS[path]()
            token = handler.get_token("echo")
        finally:
            handler.close()
    assert gateway.seen >= 1
    raised = info.value
    text = f"{raised}\n{raised!r}\n{getattr(raised, 'message', '')}\n{getattr(raised, 'body', '')}"
    assert "content-type" in text, text  # the echo reached the message: the check is not vacuous
    assert SUBSCRIPTION_KEY not in text and SECRET not in text and "blue" not in text
    assert token not in text


@pytest.fixture(autouse=True)
def _quiet_litellm() -> Iterator[None]:
    litellm.suppress_debug_info = True
    yield
    sys.stdout.flush()


def test_a_broken_config_registers_no_stand_in_for_a_name_litellm_serves_itself() -> None:
    import litellm

    from litellm_oauth2.errors import OAuth2ConfigurationError
    from litellm_oauth2.handler import register_broken_config as _register_broken_config

    kept = list(litellm.custom_provider_map)
    try:
        _register_broken_config(OAuth2ConfigurationError("broken"), ["openai", "broken_corp"])
        registered = {entry["provider"] for entry in litellm.custom_provider_map}
        assert "broken_corp" in registered
        assert "openai" not in registered, "a stand-in for a built-in name would shadow nothing and warn"
    finally:
        litellm.custom_provider_map = kept
        litellm.utils.custom_llm_setup()
