"""Every endpoint of every ``api_style``, through the SDK and the Router, against the loopback gateways.

For each style × endpoint it serves × (sync, async, stream where the API streams) × (SDK, Router):
the gateway saw exactly one request, with the expected method, path (and ``api-version`` for Azure)
and a bearer token the token server issued, and no ``api-key``/``x-api-key`` header; the caller got
the gateway's content. For each shape: a 401 once is recovered with 2 gateway and 2 token requests
(a stream's text arrives whole, once); an identity provider that is down gives
``OAuth2AuthenticationError`` with nothing sent. For each SDK shape: a second 401 reaches the caller
holding no token; a gateway's redirect is not followed. Then: a style that cannot serve an endpoint
says so with no request anywhere; the caller's credentials, base URL and client are ignored; async
functions bound before the plugin are routed by its deployment hook; no token or secret reaches
callbacks or debug output.

The servers and the handler live for the module. The tests that count token requests build a
fresh handler (a new token cache: a token dropped after a 401 is refetched at most once per
``REFETCH_AFTER_401_SECONDS`` per cache slot) and register the module's handler again after.
Known LiteLLM behaviour left out: the sync ``Router.text_completion`` passes the group name as the
model (it fails without the plugin too), and a Router cools a deployment down after a refused 401."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any

import litellm
import openai
import pytest
from helpers import (
    AZURE_DATED_RESPONSES,
    INVALID_REQUEST_401_IS_AUTHENTICATION_ERROR,
    SECRET,
    Elsewhere,
    Redirector,
    config_of,
    provider_dict,
)
from litellm.integrations.custom_logger import CustomLogger

from litellm_oauth2 import (
    OAuth2AuthenticationError,
    OAuth2ConfigurationError,
    OAuth2Handler,
    OAuth2ProviderError,
)
from litellm_oauth2._styles import ENDPOINTS, served_endpoints
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.testing import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer

Gateway = OpenAIUpstream | AzureOpenAIUpstream | AnthropicUpstream
CLIENT_ID = "test-client"
GREETING = f"Hello from upstream (client_id={CLIENT_ID})"
CALLER_KEY = "sk-caller-KNOWN-key-7Hq"
AZURE_VERSION = "2024-06-01"
OVERRIDE_VERSION = "2025-01-01-preview"
MESSAGES = [{"role": "user", "content": "hi"}]
AUDIO = ("a.wav", b"RIFF0000WAVE", "audio/wav")
# The prefix of each provider in the module's configuration, by what it is.
OPENAI, AZURE, AZURE_V1, ANTHROPIC = "corp", "az", "azv1", "cl"
STYLES = {OPENAI: "openai", AZURE: "azure", AZURE_V1: "azure", ANTHROPIC: "anthropic"}


# Each provider's style settings: (api_style, api_version).
STYLE_SETTINGS = {
    OPENAI: ("openai", None),
    AZURE: ("azure", AZURE_VERSION),
    AZURE_V1: ("azure", "v1"),
    ANTHROPIC: ("anthropic", None),
}


def providers_config(
    tokens: TokenServer, gateways: dict[str, Gateway], base: str | None = None, **overrides: Any
) -> OAuth2Config:
    """The module's four providers at their gateways (or all at the root URL ``base``), with
    ``overrides`` applied to each."""
    configured = {}
    for name, (style, version) in STYLE_SETTINGS.items():
        api_base = gateways[style].base_url if base is None else base + ("/v1" if style == "openai" else "")
        settings = {"api_style": style, **({"api_version": version} if version else {}), **overrides}
        configured[name] = provider_dict(tokens.token_url, api_base=api_base, **settings)
    return config_of(configured)


@dataclass
class World:
    tokens: TokenServer
    gateways: dict[str, Gateway]  # by style
    handler: OAuth2Handler

    def configuration(self, base: str | None = None, **overrides: Any) -> OAuth2Config:
        return providers_config(self.tokens, self.gateways, base, **overrides)

    def gateway_requests(self) -> int:
        return sum(gateway.requests for gateway in self.gateways.values())


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with (
        TokenServer() as tokens,
        OpenAIUpstream(tokens) as plain,
        AzureOpenAIUpstream(tokens) as azure,
        AnthropicUpstream(tokens) as anthropic,
    ):
        tokens.add_client(CLIENT_ID, SECRET)
        gateways: dict[str, Gateway] = {"openai": plain, "azure": azure, "anthropic": anthropic}
        handler = OAuth2Handler(config=providers_config(tokens, gateways))
        try:
            yield World(tokens, gateways, handler)
        finally:
            handler.close()


@pytest.fixture(autouse=True)
def _clean(world: World) -> Iterator[None]:
    """Each test sees empty gateways and token server, and the module's handler routing."""
    world.handler.register()
    for server in (world.tokens, *world.gateways.values()):
        server.reset()
    litellm.suppress_debug_info = True
    yield


@pytest.fixture
def fresh(world: World) -> Iterator[OAuth2Handler]:
    """A handler with the module's providers and a new token cache (no token yet, no 401 hold)."""
    handler = OAuth2Handler(
        config=world.configuration(retry={"attempts": 1, "initial_delay": 0, "max_delay": 0})
    )
    try:
        yield handler
    finally:
        handler.close()
        world.handler.register()


# -- calls ----------------------------------------------------------------------------------------


def run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


_routers: dict[str, litellm.Router] = {}


def router(model: str) -> litellm.Router:
    """A Router whose only group ``x`` is ``model``; no Router retries (the plugin's are counted)."""
    if model not in _routers:
        _routers[model] = litellm.Router(
            model_list=[{"model_name": "x", "litellm_params": {"model": model}}], num_retries=0
        )
    return _routers[model]


def chat_text(result: Any) -> str:
    return str(result.choices[0].message.content)


def chat_stream_text(stream: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


async def achat_stream_text(call: Any) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in await call])


def responses_text(result: Any) -> str:
    return str(result.output[0].content[0].text)


def responses_stream_text(events: Any) -> str:
    return "".join(
        event.delta
        for event in events
        if getattr(event.type, "value", event.type) == "response.output_text.delta"
    )


async def aresponses_stream_text(call: Any) -> str:
    return responses_stream_text([event async for event in await call])


def text_completion_text(result: Any) -> str:
    return str(result.choices[0].text)


def text_stream_text(stream: Any) -> str:
    return "".join(chunk.choices[0].text or "" for chunk in stream)


async def atext_stream_text(call: Any) -> str:
    return text_stream_text([chunk async for chunk in await call])


def embedding_text(result: Any) -> str:
    return f"embeddings:{len(result.data)}x{len(result.data[0]['embedding'])}"


def image_text(result: Any) -> str:
    return str(result.data[0].revised_prompt)


def speech_text(result: Any) -> str:
    content: bytes = result.content
    return content.decode("latin-1")


def moderation_text(result: Any) -> str:
    return f"flagged:{result.results[0].flagged}"


def rerank_text(result: Any) -> str:
    return "rerank:" + ",".join(str(item["index"]) for item in result.results)


def messages_text(result: Any) -> str:
    return str(result["content"][0]["text"])


async def amessages_stream_text(call: Any) -> str:
    """The text of an Anthropic SSE stream (LiteLLM yields its raw bytes)."""
    raw = b"".join([chunk async for chunk in await call]).decode()
    events = [json.loads(line[5:]) for line in raw.splitlines() if line.startswith("data:")]
    return "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")


@dataclass(frozen=True)
class Case:
    """One call shape: ``call()`` returns the caller's text; the gateway of ``style`` must see one
    ``method`` request at ``route`` (with ``api_version``: Azure) and the text must hold ``expected``."""

    name: str
    style: str
    method: str
    route: str
    call: Callable[[], str]
    api_version: str | None = None
    expected: str = GREETING


def openai_cases(p: str = OPENAI) -> list[Case]:
    chat, embed, resp, text = (
        f"{p}/chat-model",
        f"{p}/embed-model",
        f"{p}/gpt-4.1-mini",
        f"{p}/gpt-3.5-turbo-instruct",
    )
    image, whisper, tts, mod, rr = (
        f"{p}/dall-e-3",
        f"{p}/whisper-1",
        f"{p}/tts-1",
        f"{p}/omni-moderation-latest",
        f"{p}/rr",
    )
    post = "POST"
    return [
        Case(
            "chat",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_text(litellm.completion(model=chat, messages=MESSAGES)),
        ),
        Case(
            "achat",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_text(run(litellm.acompletion(model=chat, messages=MESSAGES))),
        ),
        Case(
            "chat stream",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_stream_text(litellm.completion(model=chat, messages=MESSAGES, stream=True)),
        ),
        Case(
            "achat stream",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: run(achat_stream_text(litellm.acompletion(model=chat, messages=MESSAGES, stream=True))),
        ),
        Case(
            "Router chat",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_text(router(chat).completion(model="x", messages=MESSAGES)),
        ),
        Case(
            "Router achat",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_text(run(router(chat).acompletion(model="x", messages=MESSAGES))),
        ),
        Case(
            "Router chat stream",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: chat_stream_text(router(chat).completion(model="x", messages=MESSAGES, stream=True)),
        ),
        Case(
            "Router achat stream",
            "openai",
            post,
            "/v1/chat/completions",
            lambda: run(
                achat_stream_text(router(chat).acompletion(model="x", messages=MESSAGES, stream=True))
            ),
        ),
        Case(
            "embedding",
            "openai",
            post,
            "/v1/embeddings",
            lambda: embedding_text(litellm.embedding(model=embed, input=["a", "b"])),
            expected="embeddings:2x8",
        ),
        Case(
            "aembedding",
            "openai",
            post,
            "/v1/embeddings",
            lambda: embedding_text(run(litellm.aembedding(model=embed, input=["a", "b"]))),
            expected="embeddings:2x8",
        ),
        Case(
            "Router embedding",
            "openai",
            post,
            "/v1/embeddings",
            lambda: embedding_text(router(embed).embedding(model="x", input=["a", "b"])),
            expected="embeddings:2x8",
        ),
        Case(
            "Router aembedding",
            "openai",
            post,
            "/v1/embeddings",
            lambda: embedding_text(run(router(embed).aembedding(model="x", input=["a", "b"]))),
            expected="embeddings:2x8",
        ),
        Case(
            "responses",
            "openai",
            post,
            "/v1/responses",
            lambda: responses_text(litellm.responses(model=resp, input="hi")),
        ),
        Case(
            "aresponses",
            "openai",
            post,
            "/v1/responses",
            lambda: responses_text(run(litellm.aresponses(model=resp, input="hi"))),
        ),
        Case(
            "responses stream",
            "openai",
            post,
            "/v1/responses",
            lambda: responses_stream_text(litellm.responses(model=resp, input="hi", stream=True)),
        ),
        Case(
            "aresponses stream",
            "openai",
            post,
            "/v1/responses",
            lambda: run(aresponses_stream_text(litellm.aresponses(model=resp, input="hi", stream=True))),
        ),
        Case(
            "Router responses",
            "openai",
            post,
            "/v1/responses",
            lambda: responses_text(router(resp).responses(model="x", input="hi")),
        ),
        Case(
            "Router aresponses",
            "openai",
            post,
            "/v1/responses",
            lambda: responses_text(run(router(resp).aresponses(model="x", input="hi"))),
        ),
        Case(
            "Router aresponses stream",
            "openai",
            post,
            "/v1/responses",
            lambda: run(aresponses_stream_text(router(resp).aresponses(model="x", input="hi", stream=True))),
        ),
        Case(
            "text_completion",
            "openai",
            post,
            "/v1/completions",
            lambda: text_completion_text(litellm.text_completion(model=text, prompt="hi")),
        ),
        Case(
            "atext_completion",
            "openai",
            post,
            "/v1/completions",
            lambda: text_completion_text(run(litellm.atext_completion(model=text, prompt="hi"))),
        ),
        Case(
            "text_completion stream",
            "openai",
            post,
            "/v1/completions",
            lambda: text_stream_text(litellm.text_completion(model=text, prompt="hi", stream=True)),
        ),
        Case(
            "atext_completion stream",
            "openai",
            post,
            "/v1/completions",
            lambda: run(atext_stream_text(litellm.atext_completion(model=text, prompt="hi", stream=True))),
        ),
        # Router.text_completion (sync) is left out: LiteLLM's passes the group name as the model.
        Case(
            "Router atext_completion",
            "openai",
            post,
            "/v1/completions",
            lambda: text_completion_text(run(router(text).atext_completion(model="x", prompt="hi"))),
        ),
        Case(
            "image_generation",
            "openai",
            post,
            "/v1/images/generations",
            lambda: image_text(litellm.image_generation(model=image, prompt="hi")),
        ),
        Case(
            "aimage_generation",
            "openai",
            post,
            "/v1/images/generations",
            lambda: image_text(run(litellm.aimage_generation(model=image, prompt="hi"))),
        ),
        Case(
            "Router image_generation",
            "openai",
            post,
            "/v1/images/generations",
            lambda: image_text(router(image).image_generation(model="x", prompt="hi")),
        ),
        Case(
            "Router aimage_generation",
            "openai",
            post,
            "/v1/images/generations",
            lambda: image_text(run(router(image).aimage_generation(model="x", prompt="hi"))),
        ),
        Case(
            "transcription",
            "openai",
            post,
            "/v1/audio/transcriptions",
            lambda: litellm.transcription(model=whisper, file=AUDIO).text,
        ),
        Case(
            "atranscription",
            "openai",
            post,
            "/v1/audio/transcriptions",
            lambda: run(litellm.atranscription(model=whisper, file=AUDIO)).text,
        ),
        Case(
            "Router atranscription",
            "openai",
            post,
            "/v1/audio/transcriptions",
            lambda: run(router(whisper).atranscription(model="x", file=AUDIO)).text,
        ),
        Case(
            "speech",
            "openai",
            post,
            "/v1/audio/speech",
            lambda: speech_text(litellm.speech(model=tts, input="say hi", voice="alloy")),
            expected="ID3\x04\x00\x00\x00\x00\x00\x00say hi",
        ),
        Case(
            "aspeech",
            "openai",
            post,
            "/v1/audio/speech",
            lambda: speech_text(run(litellm.aspeech(model=tts, input="say hi", voice="alloy"))),
            expected="ID3\x04\x00\x00\x00\x00\x00\x00say hi",
        ),
        Case(
            "Router aspeech",
            "openai",
            post,
            "/v1/audio/speech",
            lambda: speech_text(run(router(tts).aspeech(model="x", input="say hi", voice="alloy"))),
            expected="ID3\x04\x00\x00\x00\x00\x00\x00say hi",
        ),
        Case(
            "moderation",
            "openai",
            post,
            "/v1/moderations",
            lambda: moderation_text(litellm.moderation(model=mod, input="forbidden")),
            expected="flagged:True",
        ),
        Case(
            "amoderation",
            "openai",
            post,
            "/v1/moderations",
            lambda: moderation_text(run(litellm.amoderation(model=mod, input="forbidden"))),
            expected="flagged:True",
        ),
        Case(
            "Router amoderation",
            "openai",
            post,
            "/v1/moderations",
            lambda: moderation_text(run(router(mod).amoderation(model="x", input="forbidden"))),
            expected="flagged:True",
        ),
        Case(
            "rerank",
            "openai",
            post,
            "/v1/rerank",
            lambda: rerank_text(litellm.rerank(model=rr, query="blue sky", documents=["red", "blue sky"])),
            expected="rerank:1,0",
        ),
        Case(
            "arerank",
            "openai",
            post,
            "/v1/rerank",
            lambda: rerank_text(
                run(litellm.arerank(model=rr, query="blue sky", documents=["red", "blue sky"]))
            ),
            expected="rerank:1,0",
        ),
        Case(
            "Router arerank",
            "openai",
            post,
            "/v1/rerank",
            lambda: rerank_text(
                run(router(rr).arerank(model="x", query="blue sky", documents=["red", "blue sky"]))
            ),
            expected="rerank:1,0",
        ),
    ]


def azure_cases(p: str, version: str | None) -> list[Case]:
    """Azure's deployment paths (``dep1``) for a dated ``version``, its ``/openai/v1`` paths for None."""
    dep, text = f"{p}/dep1", f"{p}/gpt-3.5-turbo-instruct"
    post = "POST"

    def path(endpoint: str, deployment: str = "dep1") -> str:
        return f"/openai/deployments/{deployment}/{endpoint}" if version else f"/openai/v1/{endpoint}"

    dated_route, dated_version = AZURE_DATED_RESPONSES
    responses = (dated_route, dated_version or version) if version else ("/openai/v1/responses", None)
    speech_bytes = "ID3\x04\x00\x00\x00\x00\x00\x00say hi"
    return [
        Case(
            "chat",
            "azure",
            post,
            path("chat/completions"),
            lambda: chat_text(litellm.completion(model=dep, messages=MESSAGES)),
            version,
        ),
        Case(
            "achat",
            "azure",
            post,
            path("chat/completions"),
            lambda: chat_text(run(litellm.acompletion(model=dep, messages=MESSAGES))),
            version,
        ),
        Case(
            "chat stream",
            "azure",
            post,
            path("chat/completions"),
            lambda: chat_stream_text(litellm.completion(model=dep, messages=MESSAGES, stream=True)),
            version,
        ),
        Case(
            "achat stream",
            "azure",
            post,
            path("chat/completions"),
            lambda: run(achat_stream_text(litellm.acompletion(model=dep, messages=MESSAGES, stream=True))),
            version,
        ),
        Case(
            "Router chat",
            "azure",
            post,
            path("chat/completions"),
            lambda: chat_text(router(dep).completion(model="x", messages=MESSAGES)),
            version,
        ),
        Case(
            "Router achat stream",
            "azure",
            post,
            path("chat/completions"),
            lambda: run(
                achat_stream_text(router(dep).acompletion(model="x", messages=MESSAGES, stream=True))
            ),
            version,
        ),
        Case(
            "embedding",
            "azure",
            post,
            path("embeddings"),
            lambda: embedding_text(litellm.embedding(model=dep, input=["a", "b"])),
            version,
            "embeddings:2x8",
        ),
        Case(
            "aembedding",
            "azure",
            post,
            path("embeddings"),
            lambda: embedding_text(run(litellm.aembedding(model=dep, input=["a", "b"]))),
            version,
            "embeddings:2x8",
        ),
        Case(
            "Router aembedding",
            "azure",
            post,
            path("embeddings"),
            lambda: embedding_text(run(router(dep).aembedding(model="x", input=["a", "b"]))),
            version,
            "embeddings:2x8",
        ),
        Case(
            "responses",
            "azure",
            post,
            responses[0],
            lambda: responses_text(litellm.responses(model=dep, input="hi")),
            responses[1],
        ),
        Case(
            "aresponses",
            "azure",
            post,
            responses[0],
            lambda: responses_text(run(litellm.aresponses(model=dep, input="hi"))),
            responses[1],
        ),
        Case(
            "responses stream",
            "azure",
            post,
            responses[0],
            lambda: responses_stream_text(litellm.responses(model=dep, input="hi", stream=True)),
            responses[1],
        ),
        Case(
            "aresponses stream",
            "azure",
            post,
            responses[0],
            lambda: run(aresponses_stream_text(litellm.aresponses(model=dep, input="hi", stream=True))),
            responses[1],
        ),
        Case(
            "Router aresponses",
            "azure",
            post,
            responses[0],
            lambda: responses_text(run(router(dep).aresponses(model="x", input="hi"))),
            responses[1],
        ),
        Case(
            "image_generation",
            "azure",
            post,
            path("images/generations"),
            lambda: image_text(litellm.image_generation(model=dep, prompt="hi")),
            version,
        ),
        Case(
            "aimage_generation",
            "azure",
            post,
            path("images/generations"),
            lambda: image_text(run(litellm.aimage_generation(model=dep, prompt="hi"))),
            version,
        ),
        Case(
            "Router aimage_generation",
            "azure",
            post,
            path("images/generations"),
            lambda: image_text(run(router(dep).aimage_generation(model="x", prompt="hi"))),
            version,
        ),
        Case(
            "transcription",
            "azure",
            post,
            path("audio/transcriptions"),
            lambda: litellm.transcription(model=dep, file=AUDIO).text,
            version,
        ),
        Case(
            "atranscription",
            "azure",
            post,
            path("audio/transcriptions"),
            lambda: run(litellm.atranscription(model=dep, file=AUDIO)).text,
            version,
        ),
        Case(
            "Router atranscription",
            "azure",
            post,
            path("audio/transcriptions"),
            lambda: run(router(dep).atranscription(model="x", file=AUDIO)).text,
            version,
        ),
        Case(
            "speech",
            "azure",
            post,
            path("audio/speech"),
            lambda: speech_text(litellm.speech(model=dep, input="say hi", voice="alloy")),
            version,
            speech_bytes,
        ),
        Case(
            "aspeech",
            "azure",
            post,
            path("audio/speech"),
            lambda: speech_text(run(litellm.aspeech(model=dep, input="say hi", voice="alloy"))),
            version,
            speech_bytes,
        ),
        Case(
            "Router aspeech",
            "azure",
            post,
            path("audio/speech"),
            lambda: speech_text(run(router(dep).aspeech(model="x", input="say hi", voice="alloy"))),
            version,
            speech_bytes,
        ),
        Case(
            "text_completion",
            "azure",
            post,
            path("completions", "gpt-3.5-turbo-instruct"),
            lambda: text_completion_text(litellm.text_completion(model=text, prompt="hi")),
            version,
        ),
        Case(
            "atext_completion",
            "azure",
            post,
            path("completions", "gpt-3.5-turbo-instruct"),
            lambda: text_completion_text(run(litellm.atext_completion(model=text, prompt="hi"))),
            version,
        ),
        Case(
            "text_completion stream",
            "azure",
            post,
            path("completions", "gpt-3.5-turbo-instruct"),
            lambda: text_stream_text(litellm.text_completion(model=text, prompt="hi", stream=True)),
            version,
        ),
        Case(
            "Router atext_completion",
            "azure",
            post,
            path("completions", "gpt-3.5-turbo-instruct"),
            lambda: text_completion_text(run(router(text).atext_completion(model="x", prompt="hi"))),
            version,
        ),
    ]


def anthropic_cases(p: str = ANTHROPIC) -> list[Case]:
    claude = f"{p}/claude-haiku-4-5"
    post, route = "POST", "/v1/messages"
    return [
        Case(
            "chat",
            "anthropic",
            post,
            route,
            lambda: chat_text(litellm.completion(model=claude, messages=MESSAGES)),
        ),
        Case(
            "achat",
            "anthropic",
            post,
            route,
            lambda: chat_text(run(litellm.acompletion(model=claude, messages=MESSAGES))),
        ),
        Case(
            "chat stream",
            "anthropic",
            post,
            route,
            lambda: chat_stream_text(litellm.completion(model=claude, messages=MESSAGES, stream=True)),
        ),
        Case(
            "achat stream",
            "anthropic",
            post,
            route,
            lambda: run(achat_stream_text(litellm.acompletion(model=claude, messages=MESSAGES, stream=True))),
        ),
        Case(
            "Router chat",
            "anthropic",
            post,
            route,
            lambda: chat_text(router(claude).completion(model="x", messages=MESSAGES)),
        ),
        Case(
            "Router achat stream",
            "anthropic",
            post,
            route,
            lambda: run(
                achat_stream_text(router(claude).acompletion(model="x", messages=MESSAGES, stream=True))
            ),
        ),
        Case(
            "messages.acreate",
            "anthropic",
            post,
            route,
            lambda: messages_text(
                run(litellm.anthropic.messages.acreate(model=claude, messages=MESSAGES, max_tokens=10))
            ),
        ),
        Case(
            "messages.acreate stream",
            "anthropic",
            post,
            route,
            lambda: run(
                amessages_stream_text(
                    litellm.anthropic.messages.acreate(
                        model=claude, messages=MESSAGES, max_tokens=10, stream=True
                    )
                )
            ),
        ),
        Case(
            "Router aanthropic_messages",
            "anthropic",
            post,
            route,
            lambda: messages_text(
                run(router(claude).aanthropic_messages(model="x", messages=MESSAGES, max_tokens=10))
            ),
        ),
        Case(
            "Router aanthropic_messages stream",
            "anthropic",
            post,
            route,
            lambda: run(
                amessages_stream_text(
                    router(claude).aanthropic_messages(
                        model="x", messages=MESSAGES, max_tokens=10, stream=True
                    )
                )
            ),
        ),
        # LiteLLM's sync messages.create bridges through litellm.completion (the plugin's door).
        Case(
            "messages.create",
            "anthropic",
            post,
            route,
            lambda: messages_text(
                litellm.anthropic.messages.create(model=claude, messages=MESSAGES, max_tokens=10)
            ),
        ),
    ]


CASES = {
    **{f"openai {case.name}": case for case in openai_cases()},
    **{f"azure {case.name}": case for case in azure_cases(AZURE, AZURE_VERSION)},
    **{f"azure v1 {case.name}": case for case in azure_cases(AZURE_V1, None)},
    **{f"anthropic {case.name}": case for case in anthropic_cases()},
}
# The SDK's shapes, one per style × endpoint × (sync, async, stream). The tests that end in a
# gateway's refusal use only these: the Router would cool its deployment down for the next test.
SDK_CASES = [name for name in CASES if " Router " not in f" {name}"]


def assert_one_request_with_our_bearer(world: World, case: Case, count: int = 1) -> list[Any]:
    """The case's gateway saw ``count`` requests as the case expects (each with a valid bearer
    token of our client, no other credential header); the other gateways saw none."""
    gateway = world.gateways[case.style]
    seen = gateway.recorded
    assert [(r.method, r.route) for r in seen] == [(case.method, case.route)] * count
    assert world.gateway_requests() == count
    for request in seen:
        assert request.api_version == case.api_version
        authorization = request.headers.get("authorization", "")
        assert authorization.startswith("Bearer ")
        claims = world.tokens.verify_access_token(authorization.removeprefix("Bearer "))
        assert claims is not None and claims["sub"] == CLIENT_ID
        assert "api-key" not in request.headers and "x-api-key" not in request.headers
    return seen


@pytest.mark.parametrize("name", CASES)
def test_each_endpoint_reaches_its_path_with_our_bearer_and_returns_the_gateways_content(
    world: World, name: str
) -> None:
    case = CASES[name]
    text = case.call()
    assert case.expected in text
    assert_one_request_with_our_bearer(world, case)
    assert world.tokens.token_requests <= 1


def test_azure_per_call_api_version_reaches_the_wire(world: World) -> None:
    dep, version = f"{AZURE}/dep1", OVERRIDE_VERSION
    litellm.completion(model=dep, messages=MESSAGES, api_version=version)
    run(litellm.aembedding(model=dep, input=["a"], api_version=version))
    litellm.image_generation(model=dep, prompt="hi", api_version=version)
    run(litellm.atranscription(model=dep, file=AUDIO, api_version=version))
    litellm.speech(model=dep, input="hi", voice="alloy", api_version=version)
    litellm.text_completion(model=f"{AZURE}/gpt-3.5-turbo-instruct", prompt="hi", api_version=version)
    litellm.completion(model=dep, messages=MESSAGES)  # the provider's own version again
    seen = world.gateways["azure"].recorded
    assert [r.api_version for r in seen] == [version] * 6 + [AZURE_VERSION]
    assert len({r.route for r in seen}) == 6


def test_azure_responses_api_version_reaches_the_wire(world: World) -> None:
    azure = world.gateways["azure"]
    config = config_of(
        {
            AZURE: provider_dict(
                world.tokens.token_url,
                api_base=azure.base_url,
                api_style="azure",
                api_version=AZURE_VERSION,
                responses_api_version="2025-04-01-preview",
            )
        }
    )
    handler = OAuth2Handler(config=config)
    try:
        litellm.responses(model=f"{AZURE}/dep1", input="hi")
        litellm.responses(model=f"{AZURE}/dep1", input="hi", api_version="2025-03-01-preview")
        litellm.responses(model=f"{AZURE}/dep1", input="hi", responses_api_version="2025-01-01-preview")
        litellm.completion(model=f"{AZURE}/dep1", messages=MESSAGES)  # chat keeps api_version
    finally:
        handler.close()
    seen = [(r.route, r.api_version) for r in azure.recorded]
    assert seen == [
        ("/openai/responses", "2025-04-01-preview"),
        ("/openai/responses", "2025-03-01-preview"),
        ("/openai/responses", "2025-01-01-preview"),
        ("/openai/deployments/dep1/chat/completions", AZURE_VERSION),
    ]


def test_anthropic_version_is_the_providers_header_whatever_the_caller_sends(world: World) -> None:
    anthropic = world.gateways["anthropic"]
    config = config_of(
        {
            ANTHROPIC: provider_dict(
                world.tokens.token_url,
                api_base=anthropic.base_url,
                api_style="anthropic",
                headers={"anthropic-version": "2024-01-01"},
            )
        }
    )
    handler = OAuth2Handler(config=config)
    claude = f"{ANTHROPIC}/claude-haiku-4-5"
    try:
        litellm.completion(model=claude, messages=MESSAGES)
        run(litellm.anthropic.messages.acreate(model=claude, messages=MESSAGES, max_tokens=10))
        litellm.completion(model=claude, messages=MESSAGES, extra_headers={"anthropic-version": "2099-01-01"})
    finally:
        handler.close()
    assert [r.headers["anthropic-version"] for r in anthropic.recorded] == ["2024-01-01"] * 3
    # Without the provider's header, LiteLLM's default.
    world.handler.register()  # the module's provider: no anthropic-version of its own
    litellm.completion(model=claude, messages=MESSAGES)
    assert anthropic.last_request.headers["anthropic-version"] == "2023-06-01"


# The async LiteLLM functions as bound before the plugin wrapped them ("from litellm import ..."
# at import time): the handler's async deployment hook routes their calls.
UNWRAPPED: dict[str, tuple[str, str, Callable[[Any], Any]]] = {
    "acompletion": ("openai", "/v1/chat/completions", lambda f: f(model=f"{OPENAI}/m", messages=MESSAGES)),
    "aembedding": ("openai", "/v1/embeddings", lambda f: f(model=f"{OPENAI}/m", input=["a"])),
    "aresponses": ("openai", "/v1/responses", lambda f: f(model=f"{OPENAI}/gpt-4.1-mini", input="hi")),
    "atext_completion": (
        "openai",
        "/v1/completions",
        lambda f: f(model=f"{OPENAI}/gpt-3.5-turbo-instruct", prompt="hi"),
    ),
    "aimage_generation": (
        "openai",
        "/v1/images/generations",
        lambda f: f(model=f"{OPENAI}/dall-e-3", prompt="hi"),
    ),
    "atranscription": (
        "openai",
        "/v1/audio/transcriptions",
        lambda f: f(model=f"{OPENAI}/whisper-1", file=AUDIO),
    ),
    "aspeech": (
        "openai",
        "/v1/audio/speech",
        lambda f: f(model=f"{OPENAI}/tts-1", input="hi", voice="alloy"),
    ),
    "amoderation": (
        "openai",
        "/v1/moderations",
        lambda f: f(model=f"{OPENAI}/omni-moderation-latest", input="hi"),
    ),
    "arerank": ("openai", "/v1/rerank", lambda f: f(model=f"{OPENAI}/rr", query="q", documents=["a"])),
    "azure acompletion": (
        "azure",
        "/openai/deployments/dep1/chat/completions",
        lambda f: f(model=f"{AZURE}/dep1", messages=MESSAGES),
    ),
    "anthropic acompletion": (
        "anthropic",
        "/v1/messages",
        lambda f: f(model=f"{ANTHROPIC}/claude-haiku-4-5", messages=MESSAGES),
    ),
}


@pytest.mark.parametrize("name", UNWRAPPED)
def test_async_functions_bound_before_the_plugin_are_routed_by_its_deployment_hook(
    world: World, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    style, route, call = UNWRAPPED[name]
    original = getattr(litellm, name.split()[-1]).__wrapped__
    monkeypatch.setattr(litellm, "callbacks", [world.handler])
    run(call(original))
    (request,) = world.gateways[style].recorded
    assert request.route == route
    assert world.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))
    assert "api-key" not in request.headers and "x-api-key" not in request.headers


def test_responses_pass_previous_response_id_and_store_through(world: World) -> None:
    gateway = world.gateways["openai"]
    assert isinstance(gateway, OpenAIUpstream)
    first = litellm.responses(model=f"{OPENAI}/gpt-4.1-mini", input="hi", store=True)
    second = litellm.responses(
        model=f"{OPENAI}/gpt-4.1-mini", input="again", previous_response_id=first.id, store=False
    )
    first_body, second_body = (request.json for request in gateway.recorded)
    (stored_id,) = gateway.stored_responses
    assert first_body["store"] is True
    assert second_body["previous_response_id"] == stored_id and second_body["store"] is False
    assert responses_text(second) == f"{GREETING} previous_response_id={stored_id}"
    assert list(gateway.stored_responses) == [stored_id]


# Where each provider keeps its stored responses: (gateway, route prefix, api-version on the wire).
STORED = {
    OPENAI: ("openai", "/v1/responses", None),
    AZURE: ("azure", AZURE_DATED_RESPONSES[0], AZURE_DATED_RESPONSES[1] or AZURE_VERSION),
    AZURE_V1: ("azure", "/openai/v1/responses", None),
}


@pytest.mark.parametrize("provider", STORED)
@pytest.mark.parametrize("shape", ["sync", "async", "Router"])
def test_stored_responses_are_got_and_deleted_at_their_paths(world: World, shape: str, provider: str) -> None:
    style, prefix, version = STORED[provider]
    gateway = world.gateways[style]
    assert not isinstance(gateway, AnthropicUpstream)
    model = f"{provider}/gpt-4.1-mini"
    if shape == "sync":
        created = litellm.responses(model=model, input="hi")
        (stored_id,) = gateway.stored_responses
        got = litellm.get_responses(response_id=created.id, custom_llm_provider=provider)
        deleted = litellm.delete_responses(response_id=created.id, custom_llm_provider=provider)
    elif shape == "async":
        created = run(litellm.aresponses(model=model, input="hi"))
        (stored_id,) = gateway.stored_responses
        got = run(litellm.aget_responses(response_id=created.id, custom_llm_provider=provider))
        deleted = run(litellm.adelete_responses(response_id=created.id, custom_llm_provider=provider))
    else:
        created = run(router(model).aresponses(model="x", input="hi"))
        (stored_id,) = gateway.stored_responses
        got = run(router(model).aget_responses(response_id=created.id))
        deleted = run(router(model).adelete_responses(response_id=created.id))
    assert responses_text(got) == GREETING and deleted.deleted is True
    seen = [(r.method, r.route, r.api_version) for r in gateway.recorded]
    assert seen == [
        ("POST", prefix, version),
        ("GET", f"{prefix}/{stored_id}", version),
        ("DELETE", f"{prefix}/{stored_id}", version),
    ]
    assert gateway.stored_responses == {}
    assert world.gateway_requests() == 3
    for request in gateway.recorded:
        assert world.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))


POSITIONAL: dict[str, tuple[str, Callable[[], Any]]] = {
    "embedding": ("/v1/embeddings", lambda: litellm.embedding(f"{OPENAI}/m", ["a"])),
    "aembedding": ("/v1/embeddings", lambda: run(litellm.aembedding(f"{OPENAI}/m", ["a"]))),
    "responses": ("/v1/responses", lambda: litellm.responses("hi", f"{OPENAI}/gpt-4.1-mini")),
    "aresponses": ("/v1/responses", lambda: run(litellm.aresponses("hi", f"{OPENAI}/gpt-4.1-mini"))),
    "text_completion": (
        "/v1/completions",
        lambda: litellm.text_completion("hi", f"{OPENAI}/gpt-3.5-turbo-instruct"),
    ),
    "atext_completion": (
        "/v1/completions",
        lambda: run(litellm.atext_completion("hi", f"{OPENAI}/gpt-3.5-turbo-instruct")),
    ),
    "image_generation": (
        "/v1/images/generations",
        lambda: litellm.image_generation("hi", f"{OPENAI}/dall-e-3"),
    ),
    "aimage_generation": (
        "/v1/images/generations",
        lambda: run(litellm.aimage_generation("hi", f"{OPENAI}/dall-e-3")),
    ),
    "transcription": (
        "/v1/audio/transcriptions",
        lambda: litellm.transcription(f"{OPENAI}/whisper-1", AUDIO),
    ),
    "atranscription": (
        "/v1/audio/transcriptions",
        lambda: run(litellm.atranscription(f"{OPENAI}/whisper-1", AUDIO)),
    ),
    "speech": ("/v1/audio/speech", lambda: litellm.speech(f"{OPENAI}/tts-1", "hi", "alloy")),
    "aspeech": ("/v1/audio/speech", lambda: run(litellm.aspeech(f"{OPENAI}/tts-1", "hi", "alloy"))),
    "moderation": ("/v1/moderations", lambda: litellm.moderation("hi", f"{OPENAI}/omni-moderation-latest")),
    "amoderation": (
        "/v1/moderations",
        lambda: run(litellm.amoderation("hi", f"{OPENAI}/omni-moderation-latest")),
    ),
    "rerank": ("/v1/rerank", lambda: litellm.rerank(f"{OPENAI}/rr", "q", ["a"])),
    "arerank": ("/v1/rerank", lambda: run(litellm.arerank(f"{OPENAI}/rr", "q", ["a"]))),
}


@pytest.mark.parametrize("name", POSITIONAL)
def test_positional_arguments_are_routed(world: World, name: str) -> None:
    route, call = POSITIONAL[name]
    call()
    (request,) = world.gateways["openai"].recorded
    assert request.route == route
    assert world.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))


# -- 401 once, IdP down ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_a_401_once_is_recovered_with_two_gateway_and_two_token_requests(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    case = CASES[name]
    world.gateways[case.style].fail_next(1, 401)
    text = case.call()
    # A stream's text is whole and once: no byte of the refused attempt reached the caller.
    assert case.expected in text and text.count(case.expected) == 1
    first, retry = assert_one_request_with_our_bearer_or_refused(world, case)
    assert first != retry
    assert world.tokens.token_requests == 2


def assert_one_request_with_our_bearer_or_refused(world: World, case: Case) -> tuple[str, str]:
    """Two requests at the case's path: the refused one, then the retry with a new valid token."""
    seen = world.gateways[case.style].recorded
    assert [(r.method, r.route) for r in seen] == [(case.method, case.route)] * 2
    assert world.gateway_requests() == 2
    for request in seen:
        assert request.api_version == case.api_version
        assert "api-key" not in request.headers and "x-api-key" not in request.headers
    first, retry = (r.headers["authorization"].removeprefix("Bearer ") for r in seen)
    assert world.tokens.verify_access_token(retry) is not None
    return first, retry


@pytest.mark.parametrize("name", CASES)
def test_identity_provider_down_raises_oauth2_error_and_sends_nothing(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    case = CASES[name]
    world.tokens.fail_next(100, status=503)
    with pytest.raises(Exception) as raised:
        case.call()
    assert isinstance(raised.value, OAuth2ProviderError), f"caller got {type(raised.value).__name__}"
    assert isinstance(raised.value, OAuth2AuthenticationError)
    assert "503" in str(raised.value)
    assert world.gateway_requests() == 0
    assert world.tokens.token_requests >= 1


@pytest.mark.parametrize("name", SDK_CASES)
def test_a_second_401_reaches_the_caller_as_authentication_error_without_the_token(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    case = CASES[name]
    world.gateways[case.style].fail_next(2, 401)
    # LiteLLM raises the openai SDK's own error for sync transcription, speech and (a)moderation.
    expected: Any = (litellm.AuthenticationError, openai.AuthenticationError)
    if case.style == "openai" and case.route in ("/v1/responses", "/v1/rerank"):
        expected = (
            litellm.AuthenticationError
            if INVALID_REQUEST_401_IS_AUTHENTICATION_ERROR
            else litellm.BadRequestError
        )
    with pytest.raises(expected) as raised:
        case.call()
    if expected is litellm.BadRequestError:  # the gateway's 401 is the response it carries
        assert raised.value.response.status_code == 401
    else:
        assert raised.value.status_code == 401
    assert world.gateway_requests() == 2 and world.tokens.token_requests == 2
    shown = str(raised.value) + repr(raised.value)
    assert not [token for token in world.tokens.issued_tokens if token in shown]


# LiteLLM sends an openai-provider text completion stream lazily, at the first chunk, after the
# plugin's wrapper returned: its failure is LiteLLM's 401, not the plugin's error (nor redacted).
LAZY_STREAMS = {
    "openai text_completion stream",
    "openai atext_completion stream",
    "azure v1 text_completion stream",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True, reason="the request leaves at the first chunk, after the wrapper returned"
            ),
        )
        if name in LAZY_STREAMS
        else name
        for name in SDK_CASES
    ],
)
def test_a_401_whose_renewal_fails_raises_the_oauth2_error(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    case = CASES[name]
    fresh.cache.get_token(case_provider(name))  # a token before the fault
    world.tokens.reset()
    world.gateways[case.style].fail_next(1, 401)
    world.tokens.fail_next(100, status=503)
    with pytest.raises(Exception) as raised:
        case.call()
    assert isinstance(raised.value, OAuth2ProviderError), (
        f"caller got {type(raised.value).__name__}: {raised.value}"
    )
    assert "503" in str(raised.value)
    assert world.gateway_requests() == 1 and world.tokens.token_requests >= 1


def case_provider(name: str) -> str:
    """The provider prefix a case calls."""
    return {"openai": OPENAI, "azure": AZURE, "azure v1": AZURE_V1, "anthropic": ANTHROPIC}[
        "azure v1" if name.startswith("azure v1") else name.split()[0]
    ]


@pytest.fixture(scope="module")
def redirector() -> Iterator[Redirector]:
    with Elsewhere() as elsewhere, Redirector(elsewhere) as server:
        yield server


@pytest.mark.parametrize("name", SDK_CASES)
def test_a_redirect_is_not_followed(world: World, redirector: Redirector, name: str) -> None:
    handler = OAuth2Handler(config=world.configuration(base=redirector.url))
    redirector.seen.clear()
    redirector.target.seen.clear()
    try:
        with pytest.raises(Exception):  # LiteLLM's error for an unexpected 307
            CASES[name].call()
    finally:
        handler.close()
    assert len(redirector.seen) == 1 and redirector.target.seen == []
    assert world.tokens.verify_access_token(
        redirector.seen[0].headers["authorization"].removeprefix("Bearer ")
    )


CROWDS: dict[str, tuple[str, Callable[[], Any]]] = {
    "openai aresponses": ("openai", lambda: litellm.aresponses(model=f"{OPENAI}/gpt-4.1-mini", input="hi")),
    "openai arerank": ("openai", lambda: litellm.arerank(model=f"{OPENAI}/rr", query="q", documents=["a"])),
    "azure atranscription": ("azure", lambda: litellm.atranscription(model=f"{AZURE}/dep1", file=AUDIO)),
    "anthropic messages.acreate": (
        "anthropic",
        lambda: litellm.anthropic.messages.acreate(
            model=f"{ANTHROPIC}/claude-haiku-4-5", messages=MESSAGES, max_tokens=10
        ),
    ),
}


@pytest.mark.parametrize("name", CROWDS)
def test_a_cold_crowd_of_50_calls_makes_one_token_request(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    style, call = CROWDS[name]
    world.tokens.delay_next(1, 0.3)

    async def crowd() -> list[Any]:
        return await asyncio.gather(*(call() for _ in range(50)))

    assert len(run(crowd())) == 50
    assert world.tokens.token_requests == 1
    assert world.gateways[style].authorized_requests == 50 == world.gateway_requests()


# -- what a style cannot serve --------------------------------------------------------------------


def _unsupported_call(endpoint: str, provider: str, is_async: bool) -> Callable[[], Any]:
    model = f"{provider}/m"
    arguments: dict[str, dict[str, Any]] = {
        "completion": {"model": model, "messages": MESSAGES},
        "embedding": {"model": model, "input": ["a"]},
        "responses": {"model": model, "input": "hi"},
        "get_responses": {"response_id": "resp_1", "custom_llm_provider": provider},
        "delete_responses": {"response_id": "resp_1", "custom_llm_provider": provider},
        "text_completion": {"model": model, "prompt": "hi"},
        "image_generation": {"model": model, "prompt": "hi"},
        "transcription": {"model": model, "file": AUDIO},
        "speech": {"model": model, "input": "hi", "voice": "alloy"},
        "moderation": {"model": model, "input": "hi"},
        "rerank": {"model": model, "query": "q", "documents": ["a"]},
        "anthropic_messages": {"model": model, "messages": MESSAGES, "max_tokens": 10},
    }
    kwargs = arguments[endpoint]
    if endpoint == "anthropic_messages":
        return lambda: run(litellm.anthropic.messages.acreate(**kwargs))
    if is_async:
        return lambda: run(getattr(litellm, f"a{endpoint}")(**kwargs))
    return lambda: getattr(litellm, endpoint)(**kwargs)


UNSUPPORTED = {
    f"{provider} {endpoint}{' async' if is_async else ''}": (provider, endpoint, is_async)
    for provider, served in {
        OPENAI: set(ENDPOINTS) - {"anthropic_messages"},
        AZURE: set(ENDPOINTS) - {"moderation", "rerank", "anthropic_messages"},
        ANTHROPIC: {"completion", "anthropic_messages"},
    }.items()
    for endpoint in ENDPOINTS
    if endpoint not in served
    for is_async in ((True,) if endpoint == "anthropic_messages" else (False, True))  # acreate only
}


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_an_endpoint_the_style_cannot_serve_says_so_with_no_request_anywhere(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    provider, endpoint, is_async = UNSUPPORTED[name]
    with pytest.raises(OAuth2ConfigurationError) as raised:
        _unsupported_call(endpoint, provider, is_async)()
    message = str(raised.value)
    assert endpoint in message and f"'{provider}'" in message and f"'{STYLES[provider]}'" in message
    assert isinstance(raised.value, OAuth2ProviderError)
    assert world.gateway_requests() == 0
    assert world.tokens.token_requests == 0


ROUTER_UNSUPPORTED: dict[str, tuple[str, str, Callable[[litellm.Router], Any]]] = {
    "anthropic aembedding": (ANTHROPIC, "embedding", lambda r: r.aembedding(model="x", input=["a"])),
    "anthropic aresponses": (ANTHROPIC, "responses", lambda r: r.aresponses(model="x", input="hi")),
    "anthropic aimage_generation": (
        ANTHROPIC,
        "image_generation",
        lambda r: r.aimage_generation(model="x", prompt="hi"),
    ),
    "azure arerank": (AZURE, "rerank", lambda r: r.arerank(model="x", query="q", documents=["a"])),
    "azure amoderation": (AZURE, "moderation", lambda r: r.amoderation(model="x", input="hi")),
    "azure aanthropic_messages": (
        AZURE,
        "anthropic_messages",
        lambda r: r.aanthropic_messages(model="x", messages=MESSAGES, max_tokens=10),
    ),
    "openai aanthropic_messages": (
        OPENAI,
        "anthropic_messages",
        lambda r: r.aanthropic_messages(model="x", messages=MESSAGES, max_tokens=10),
    ),
}


@pytest.mark.parametrize("name", ROUTER_UNSUPPORTED)
def test_the_router_passes_the_unsupported_endpoint_error_on_and_keeps_the_deployment(
    world: World, fresh: OAuth2Handler, name: str
) -> None:
    provider, endpoint, call = ROUTER_UNSUPPORTED[name]
    shared = litellm.Router(
        model_list=[{"model_name": "x", "litellm_params": {"model": f"{provider}/m"}}], num_retries=0
    )
    for _ in range(2):
        with pytest.raises(OAuth2ConfigurationError, match=f"cannot serve {endpoint}"):
            run(call(shared))
    assert world.gateway_requests() == 0 and world.tokens.token_requests == 0
    run(shared.acompletion(model="x", messages=MESSAGES))  # not cooled down
    assert world.gateway_requests() == 1


def test_every_unsupported_pair_is_covered() -> None:
    for provider in (OPENAI, AZURE, ANTHROPIC):
        settings = config_of(
            {provider: provider_dict("https://idp/token", api_base="https://gw", api_style=STYLES[provider])}
        ).provider(provider)
        refused = set(ENDPOINTS) - served_endpoints(settings)
        assert refused == {endpoint for p, endpoint, _ in UNSUPPORTED.values() if p == provider}


# -- the caller's credentials ---------------------------------------------------------------------


def _caller_arguments(elsewhere: Elsewhere) -> dict[str, Any]:
    return {
        "api_key": CALLER_KEY,
        "api_base": elsewhere.url + "/v1",
        "client": openai.OpenAI(api_key=CALLER_KEY, base_url=elsewhere.url + "/v1", max_retries=0),
        "extra_headers": {
            "Authorization": f"Bearer {CALLER_KEY}",
            "api-key": CALLER_KEY,
            "x-api-key": CALLER_KEY,
        },
    }


CALLER_CASES: dict[str, tuple[str, str, Callable[[dict[str, Any]], Any]]] = {
    "openai chat": (
        "openai",
        "/v1/chat/completions",
        lambda c: litellm.completion(model=f"{OPENAI}/m", messages=MESSAGES, **c),
    ),
    "openai embedding": (
        "openai",
        "/v1/embeddings",
        lambda c: litellm.embedding(model=f"{OPENAI}/m", input=["a"], **c),
    ),
    "openai responses": (
        "openai",
        "/v1/responses",
        lambda c: litellm.responses(model=f"{OPENAI}/gpt-4.1-mini", input="hi", **c),
    ),
    "openai text_completion": (
        "openai",
        "/v1/completions",
        lambda c: litellm.text_completion(model=f"{OPENAI}/gpt-3.5-turbo-instruct", prompt="hi", **c),
    ),
    "openai image_generation": (
        "openai",
        "/v1/images/generations",
        lambda c: litellm.image_generation(model=f"{OPENAI}/dall-e-3", prompt="hi", **c),
    ),
    "openai transcription": (
        "openai",
        "/v1/audio/transcriptions",
        lambda c: litellm.transcription(model=f"{OPENAI}/whisper-1", file=AUDIO, **c),
    ),
    "openai speech": (
        "openai",
        "/v1/audio/speech",
        lambda c: litellm.speech(model=f"{OPENAI}/tts-1", input="hi", voice="alloy", **c),
    ),
    "openai moderation": (
        "openai",
        "/v1/moderations",
        lambda c: litellm.moderation(model=f"{OPENAI}/omni-moderation-latest", input="hi", **c),
    ),
    "openai rerank": (
        "openai",
        "/v1/rerank",
        lambda c: litellm.rerank(model=f"{OPENAI}/rr", query="q", documents=["a"], **c),
    ),
    "azure chat": (
        "azure",
        "/openai/deployments/dep1/chat/completions",
        lambda c: litellm.completion(model=f"{AZURE}/dep1", messages=MESSAGES, **c),
    ),
    "azure responses": (
        "azure",
        AZURE_DATED_RESPONSES[0],
        lambda c: litellm.responses(model=f"{AZURE}/dep1", input="hi", **c),
    ),
    "azure image_generation": (
        "azure",
        "/openai/deployments/dep1/images/generations",
        lambda c: litellm.image_generation(model=f"{AZURE}/dep1", prompt="hi", **c),
    ),
    "anthropic chat": (
        "anthropic",
        "/v1/messages",
        lambda c: litellm.completion(model=f"{ANTHROPIC}/claude-haiku-4-5", messages=MESSAGES, **c),
    ),
    "anthropic messages.acreate": (
        "anthropic",
        "/v1/messages",
        lambda c: run(
            litellm.anthropic.messages.acreate(
                model=f"{ANTHROPIC}/claude-haiku-4-5", messages=MESSAGES, max_tokens=10, **c
            )
        ),
    ),
}


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[Elsewhere]:
    with Elsewhere() as server:
        yield server


@pytest.mark.parametrize("name", CALLER_CASES)
def test_the_callers_key_base_client_and_credential_headers_are_ignored(
    world: World, elsewhere: Elsewhere, name: str
) -> None:
    style, route, call = CALLER_CASES[name]
    elsewhere.seen.clear()
    call(_caller_arguments(elsewhere))
    assert elsewhere.seen == []
    (request,) = world.gateways[style].recorded
    assert request.route == route
    assert world.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))
    assert "api-key" not in request.headers and "x-api-key" not in request.headers
    assert CALLER_KEY not in json.dumps(request.headers) + request.body.decode("utf-8", "replace")


ROUTER_CALLER_CASES: dict[str, tuple[str, str, str, Callable[[litellm.Router], Any]]] = {
    "openai achat": (
        "openai",
        "/v1/chat/completions",
        f"{OPENAI}/m",
        lambda r: r.acompletion(model="x", messages=MESSAGES),
    ),
    "openai aresponses": (
        "openai",
        "/v1/responses",
        f"{OPENAI}/gpt-4.1-mini",
        lambda r: r.aresponses(model="x", input="hi"),
    ),
    "openai atranscription": (
        "openai",
        "/v1/audio/transcriptions",
        f"{OPENAI}/whisper-1",
        lambda r: r.atranscription(model="x", file=AUDIO),
    ),
    "openai arerank": (
        "openai",
        "/v1/rerank",
        f"{OPENAI}/rr",
        lambda r: r.arerank(model="x", query="q", documents=["a"]),
    ),
    "azure aembedding": (
        "azure",
        "/openai/deployments/dep1/embeddings",
        f"{AZURE}/dep1",
        lambda r: r.aembedding(model="x", input=["a"]),
    ),
    "anthropic aanthropic_messages": (
        "anthropic",
        "/v1/messages",
        f"{ANTHROPIC}/claude-haiku-4-5",
        lambda r: r.aanthropic_messages(model="x", messages=MESSAGES, max_tokens=10),
    ),
}


@pytest.mark.parametrize("name", ROUTER_CALLER_CASES)
def test_credentials_in_router_litellm_params_are_ignored(
    world: World, elsewhere: Elsewhere, name: str
) -> None:
    """A model list (the proxy's config) that names a key, a base URL or headers for the deployment."""
    style, route, model, call = ROUTER_CALLER_CASES[name]
    params = {
        "model": model,
        "api_key": CALLER_KEY,
        "api_base": elsewhere.url + "/v1",
        "extra_headers": {"Authorization": f"Bearer {CALLER_KEY}", "api-key": CALLER_KEY},
    }
    elsewhere.seen.clear()
    run(call(litellm.Router(model_list=[{"model_name": "x", "litellm_params": params}], num_retries=0)))
    assert elsewhere.seen == []
    (request,) = world.gateways[style].recorded
    assert request.route == route
    assert world.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))
    assert CALLER_KEY not in json.dumps(request.headers) + request.body.decode("utf-8", "replace")


# -- leaks ----------------------------------------------------------------------------------------


class Recorder(CustomLogger):
    """Another callback in the app: records repr() of every kwargs it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self.seen.append(repr(kwargs))

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.seen += [repr(kwargs), repr(response_obj)]

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self.seen += [repr(kwargs), repr(response_obj)]

    async def async_log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self.seen.append(repr(kwargs))

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.seen += [repr(kwargs), repr(response_obj)]

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.seen += [repr(kwargs), repr(response_obj)]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(f"{record.name} {record.getMessage()}")


LEAK_LOGGERS = ("", "LiteLLM", "LiteLLM Router", "litellm_oauth2", "httpx", "httpcore", "openai")


def test_no_token_or_secret_in_callbacks_or_debug_output_on_the_new_paths(
    world: World, fresh: OAuth2Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    capture = _Capture()
    loggers = [logging.getLogger(name) for name in LEAK_LOGGERS]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
        lg.disabled = False
    monkeypatch.setattr(litellm, "callbacks", [recorder])
    monkeypatch.setattr(litellm._logging, "_ENABLE_SECRET_REDACTION", False, raising=False)
    monkeypatch.setenv("LITELLM_DISABLE_REDACT_SECRETS", "true")
    errors: list[str] = []
    out, err = io.StringIO(), io.StringIO()
    litellm._turn_on_debug()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            for name in SDK_CASES:
                if " chat" in f" {name}" and "stream" not in name and not name.startswith("anthropic"):
                    continue  # chat is the integration test's; here the new paths
                CASES[name].call()
            for name in ("openai responses stream", "azure aresponses", "anthropic messages.acreate"):
                world.gateways[CASES[name].style].fail_next(1, 401)
                CASES[name].call()
            world.gateways["openai"].fail_next(2, 401)
            try:
                CASES["openai rerank"].call()
            except Exception as exc:
                errors += [str(exc), repr(exc)]
    finally:
        litellm._logging._disable_debugging()
        litellm.set_verbose = False
        for lg, level, disabled in saved:
            lg.removeHandler(capture)
            lg.setLevel(level)
            lg.disabled = disabled
    texts = [out.getvalue(), err.getvalue(), *recorder.seen, *capture.texts, *errors]
    assert len(recorder.seen) >= 40, "the recording callback saw no calls"
    assert any("LiteLLM" in text for text in capture.texts), "LiteLLM's debug output was not captured"
    assert errors
    secrets = {"client secret": SECRET, **{f"token {i}": t for i, t in enumerate(world.tokens.issued_tokens)}}
    assert len(secrets) >= 3  # the secret, the first token and the one fetched after a 401
    leaked = sorted({label for label, secret in secrets.items() for text in texts if secret in text})
    assert not leaked, f"leaked into callback kwargs, logs or errors: {leaked}"
