"""The LiteLLM facts ``litellm_oauth2._compat`` relies on, one test each, named after the fact.

Each fact test makes a real LiteLLM call with a recording ``CustomLLM`` registered under the
name in question, so a LiteLLM upgrade that changes how names are routed fails the test
that names the fact. The list of names refused at registration is computed from LiteLLM
here, independently of ``_compat``.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import openai
import pytest
from helpers import (
    INVALID_REQUEST_401_IS_AUTHENTICATION_ERROR,
    LITELLM_VERSION,
    SECRET,
    Elsewhere,
    config_of,
    provider_dict,
)
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_httpx import http_handler
from litellm.llms.custom_httpx.http_handler import HTTPHandler
from litellm.llms.custom_llm import CustomLLM
from litellm.llms.openai_like.json_loader import JSONProviderRegistry
from litellm.types.utils import LlmProvidersSet

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2._compat import RESPONSES_API_VERSION_READ, litellm_routed_names
from litellm_oauth2.errors import OAuth2ValidationError
from litellm_oauth2.testing import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer

MESSAGES = [{"role": "user", "content": "hello"}]
STATIC_KEY = "sk-static-gateway-key"


def _literal_dispatch_names() -> set[str]:
    """Every name ``litellm/main.py`` compares ``custom_llm_provider`` with, read from its source."""
    source = Path(litellm.main.__file__).read_text(encoding="utf-8")
    return set(re.findall(r'custom_llm_provider\s*==\s*"([^"]+)"', source))


def _names_litellm_knows() -> list[str]:
    names = set(LlmProvidersSet) | set(litellm.openai_compatible_providers) | set(litellm.provider_list)
    names |= set(JSONProviderRegistry.list_providers()) | _literal_dispatch_names()
    return sorted(names - set(litellm._custom_providers))


class _Recording(CustomLLM):
    """A custom provider that only counts the calls LiteLLM gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return litellm.ModelResponse(choices=[{"message": {"role": "assistant", "content": "custom"}}])


@pytest.fixture
def litellm_lists() -> Iterator[None]:
    """Put back the routing lists custom providers add to, so no test leaks a name."""
    saved = (list(litellm.custom_provider_map), list(litellm.provider_list), list(litellm._custom_providers))
    yield
    litellm.custom_provider_map = saved[0]
    litellm.provider_list[:] = saved[1]
    litellm._custom_providers[:] = saved[2]


@pytest.fixture
def servers() -> Iterator[tuple[TokenServer, OpenAIUpstream]]:
    with TokenServer() as tokens, OpenAIUpstream(tokens, static_api_key=STATIC_KEY) as gateway:
        tokens.add_client("test-client", SECRET)
        yield tokens, gateway


def _register_recording(name: str) -> _Recording:
    handler = _Recording()
    litellm.custom_provider_map = [
        *litellm.custom_provider_map,
        {"provider": name, "custom_handler": handler},
    ]
    litellm.utils.custom_llm_setup()
    return handler


def _served_by_litellm(name: str, gateway: OpenAIUpstream) -> None:
    """A real ``name/chat`` call goes to the gateway through LiteLLM's handler, not the custom one."""
    custom = _register_recording(name)
    response = litellm.completion(
        model=f"{name}/chat", messages=MESSAGES, api_base=gateway.base_url, api_key=STATIC_KEY
    )
    assert custom.calls == 0, f"'{name}/chat' reached the custom provider"
    assert gateway.requests == 1 and response.choices[0].message.content != "custom"
    assert name in litellm_routed_names()


# -- the facts -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("litellm_lists")
def test_json_registry_routes_first(servers: tuple[TokenServer, OpenAIUpstream]) -> None:
    only_json = sorted(set(JSONProviderRegistry.list_providers()) - set(LlmProvidersSet))
    assert only_json, "every JSON provider is also an LlmProviders member: pick any"
    _served_by_litellm(only_json[0], servers[1])


@pytest.mark.usefixtures("litellm_lists")
def test_provider_list_routes_before_custom_map(servers: tuple[TokenServer, OpenAIUpstream]) -> None:
    assert "openai" in litellm.provider_list
    _served_by_litellm("openai", servers[1])


@pytest.mark.usefixtures("litellm_lists")
def test_custom_setup_lists_custom_names() -> None:
    custom = _register_recording("acme_compat_gw")
    assert "acme_compat_gw" in litellm.provider_list and "acme_compat_gw" in litellm._custom_providers
    response = litellm.completion(model="acme_compat_gw/chat", messages=MESSAGES)
    assert custom.calls == 1 and response.choices[0].message.content == "custom"
    assert "acme_compat_gw" not in litellm_routed_names()


@pytest.mark.usefixtures("litellm_lists")
def test_openai_compatible_served_first(servers: tuple[TokenServer, OpenAIUpstream]) -> None:
    assert "anyscale" in litellm.openai_compatible_providers and "anyscale" not in LlmProvidersSet
    _served_by_litellm("anyscale", servers[1])


@pytest.mark.usefixtures("litellm_lists")
def test_dispatched_by_literal_name() -> None:
    assert _literal_dispatch_names() <= litellm_routed_names()
    custom = _register_recording("palm")
    with pytest.raises(Exception, match=r"decommis+ioned"):  # spelt with one s before 1.110
        litellm.completion(model="palm/chat", messages=MESSAGES)
    assert custom.calls == 0


# -- the check at registration -------------------------------------------------------------------


@pytest.mark.usefixtures("litellm_lists")
def test_anyscale_is_refused_before_litellm_serves_it(
    servers: tuple[TokenServer, OpenAIUpstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens, gateway = servers
    monkeypatch.setenv("ANYSCALE_API_BASE", gateway.base_url)
    config = config_of({"anyscale": provider_dict(tokens.token_url, api_base=gateway.base_url)})
    try:
        OAuth2Handler(config=config)
    except OAuth2ValidationError as exc:
        error = exc
    else:
        litellm.completion(model="anyscale/chat", messages=MESSAGES, api_key=STATIC_KEY)
        pytest.fail(
            "'anyscale' was accepted, and LiteLLM's own handler served a real 'anyscale/chat' call: "
            f"{tokens.token_requests} token requests, {gateway.requests} gateway request(s) "
            "carrying the caller's key instead of a token"
        )
    assert error.provider == "anyscale" and error.field == "oauth2_providers"
    assert "'oauth2_providers'" in str(error) and "'anyscale_oauth2'" in str(error)
    assert "provider_name" not in str(error)
    assert tokens.token_requests == 0 and gateway.requests == 0
    assert not any(entry["provider"] == "anyscale" for entry in litellm.custom_provider_map)


@pytest.mark.usefixtures("litellm_lists")
@pytest.mark.parametrize("name", _names_litellm_knows())
def test_every_name_litellm_routes_is_refused(name: str) -> None:
    config = config_of({name: provider_dict("https://idp.example.com/token", api_base="https://gw.example")})
    with pytest.raises(OAuth2ValidationError) as info:
        OAuth2Handler(config=config)
    assert info.value.provider == name and info.value.field == "oauth2_providers"
    assert [problem.provider for problem in info.value.problems] == [name]


@pytest.mark.usefixtures("litellm_lists")
def test_every_colliding_name_is_listed_at_once() -> None:
    providers = {
        name: provider_dict("https://idp.example.com/token", api_base="https://gw.example")
        for name in ("acme_gw", "openai", "anyscale")
    }
    with pytest.raises(OAuth2ValidationError) as info:
        OAuth2Handler(config=config_of(providers))
    assert [problem.provider for problem in info.value.problems] == ["openai", "anyscale"]
    assert "provider 'openai'" in str(info.value) and "provider 'anyscale'" in str(info.value)


@pytest.mark.usefixtures("litellm_lists")
def test_names_this_plugin_registered_stay_usable() -> None:
    config = config_of(
        {"acme_gw": provider_dict("https://idp.example.com/token", api_base="https://gw.example")}
    )
    first = OAuth2Handler(config=config)
    assert "acme_gw" in litellm.provider_list  # custom_llm_setup added it
    second = OAuth2Handler(config=config)
    assert [e["custom_handler"] for e in litellm.custom_provider_map if e["provider"] == "acme_gw"] == [
        second.providers["acme_gw"]
    ]
    first.close()
    second.close()


# -- how a call reaches the gateway with the plugin's client --------------------------------------

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there
AUDIO = ("a.wav", b"RIFF0000WAVE", "audio/wav")


class _RecordingChatAndEmbedding(CustomLLM):
    """A custom provider answering chat and embeddings, counting the calls LiteLLM gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("completion")
        return litellm.ModelResponse(choices=[{"message": {"role": "assistant", "content": "custom"}}])

    def embedding(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("embedding")
        response = kwargs["model_response"]
        response.data = [{"object": "embedding", "index": 0, "embedding": [0.5]}]
        return response


@pytest.mark.usefixtures("litellm_lists")
def test_custom_provider_map_makes_prefix_known() -> None:
    custom = _RecordingChatAndEmbedding()
    litellm.custom_provider_map = [
        *litellm.custom_provider_map,
        {"provider": "acme_known_gw", "custom_handler": custom},
    ]
    litellm.utils.custom_llm_setup()
    model = "acme_known_gw/m"
    assert litellm.get_llm_provider(model)[1] == "acme_known_gw"
    router = litellm.Router(model_list=[{"model_name": "x", "litellm_params": {"model": model}}])
    assert router.completion(model="x", messages=MESSAGES).choices[0].message.content == "custom"
    assert litellm.embedding(model=model, input=["a"]).data[0]["embedding"] == [0.5]
    assert custom.calls == ["completion", "embedding"]


@pytest.fixture
def gateways() -> Iterator[tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere]]:
    with (
        OpenAIUpstream(static_api_key=STATIC_KEY) as plain,
        AzureOpenAIUpstream(static_api_key=STATIC_KEY) as azure,
        AnthropicUpstream(static_api_key=STATIC_KEY) as anthropic,
        Elsewhere() as elsewhere,
    ):
        yield plain, azure, anthropic, elsewhere


def _run(coroutine: Any) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


class _ByAttribute:
    """Stands in for ``litellm.<name>``: records the call, then calls what was there."""

    def __init__(self, name: str, original: Any, seen: list[str]) -> None:
        self.name, self.original, self.seen = name, original, seen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(self.name)
        return self.original(*args, **kwargs)


ROUTER_CALLS: dict[str, Callable[[litellm.Router], Any]] = {
    "acompletion": lambda r: r.acompletion(model="x", messages=MESSAGES),
    "aembedding": lambda r: r.aembedding(model="x", input=["a"]),
    "aresponses": lambda r: r.aresponses(model="x", input="hi"),
    "atext_completion": lambda r: r.atext_completion(model="x", prompt="hi"),
    "aimage_generation": lambda r: r.aimage_generation(model="x", prompt="hi"),
    "atranscription": lambda r: r.atranscription(model="x", file=AUDIO),
    "aspeech": lambda r: r.aspeech(model="x", input="hi", voice="alloy"),
    "amoderation": lambda r: r.amoderation(model="x", input="hi"),
    "arerank": lambda r: r.arerank(model="x", query="q", documents=["a"]),
}


# Router endpoints LiteLLM 1.108 binds when the Router is built (router.py,
# _initialize_core_endpoints: factory_function(litellm.<name>)); from 1.109 every one is looked up per call.
ROUTER_BINDS_AT_CONSTRUCTION = (
    frozenset() if LITELLM_VERSION >= (1, 109) else frozenset({"aresponses", "amoderation"})
)


@pytest.mark.parametrize("name", ROUTER_CALLS)
def test_endpoints_looked_up_at_call_time(
    name: str, gateways: tuple[OpenAIUpstream, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateways[0]
    model = "hosted_vllm/rr" if name == "arerank" else "openai/gpt-3.5-turbo-instruct"
    params = {"model": model, "api_base": gateway.base_url, "api_key": STATIC_KEY}
    router = litellm.Router(model_list=[{"model_name": "x", "litellm_params": params}], num_retries=0)
    seen: list[str] = []
    # Replaced after the Router was built: the Router must find the replacement when it calls.
    monkeypatch.setattr(litellm, name, _ByAttribute(name, getattr(litellm, name), seen))
    _run(ROUTER_CALLS[name](router))
    assert seen == ([] if name in ROUTER_BINDS_AT_CONSTRUCTION else [name])
    assert gateway.requests == 1


class _Rewriter(CustomLogger):
    """Sends every call to the gateway by rewriting its kwargs in the deployment hook."""

    def __init__(self, api_base: str, extra: dict[str, Any]) -> None:
        super().__init__()
        self.api_base, self.extra = api_base, extra
        self.call_types: list[object] = []

    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any]:
        logged = getattr(kwargs.get("litellm_logging_obj"), "call_type", None)
        self.call_types.append(getattr(call_type, "value", call_type) or getattr(logged, "value", logged))
        return {**kwargs, "api_base": self.api_base, "api_key": STATIC_KEY, **self.extra}


HOOKED_CALLS: dict[str, tuple[str, Callable[[], Any]]] = {
    "acompletion": (
        "/v1/chat/completions",
        lambda: litellm.acompletion(model="openai/m", messages=MESSAGES, api_base=UNREACHABLE),
    ),
    "aembedding": (
        "/v1/embeddings",
        lambda: litellm.aembedding(model="openai/m", input=["a"], api_base=UNREACHABLE),
    ),
    "aresponses": (
        "/v1/responses",
        lambda: litellm.aresponses(model="openai/gpt-4.1-mini", input="hi", api_base=UNREACHABLE),
    ),
    "atext_completion": (
        "/v1/completions",
        lambda: litellm.atext_completion(
            model="openai/gpt-3.5-turbo-instruct", prompt="hi", api_base=UNREACHABLE
        ),
    ),
    "aimage_generation": (
        "/v1/images/generations",
        lambda: litellm.aimage_generation(model="openai/dall-e-3", prompt="hi", api_base=UNREACHABLE),
    ),
    "atranscription": (
        "/v1/audio/transcriptions",
        lambda: litellm.atranscription(model="openai/whisper-1", file=AUDIO, api_base=UNREACHABLE),
    ),
    "aspeech": (
        "/v1/audio/speech",
        lambda: litellm.aspeech(model="openai/tts-1", input="hi", voice="alloy", api_base=UNREACHABLE),
    ),
    "amoderation": (
        "/v1/moderations",
        lambda: litellm.amoderation(model="openai/omni-moderation-latest", input="hi", api_base=UNREACHABLE),
    ),
    "arerank": (
        "/v1/rerank",
        lambda: litellm.arerank(model="hosted_vllm/rr", query="q", documents=["a"], api_base=UNREACHABLE),
    ),
}


@pytest.mark.parametrize("name", HOOKED_CALLS)
def test_async_deployment_hook_rewrites_kwargs(
    name: str, gateways: tuple[OpenAIUpstream, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = gateways[0]
    rewriter = _Rewriter(gateway.base_url, {})
    monkeypatch.setattr(litellm, "callbacks", [rewriter])
    route, call = HOOKED_CALLS[name]
    _run(call())
    assert rewriter.call_types == [name]
    assert [r.route for r in gateway.recorded] == [route]


def test_async_deployment_hook_rewrites_kwargs_of_stored_responses_and_messages(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain, _azure, anthropic, _elsewhere = gateways
    created = litellm.responses(
        model="openai/gpt-4.1-mini", input="hi", api_base=plain.base_url, api_key=STATIC_KEY
    )
    rewriter = _Rewriter(plain.base_url, {})
    monkeypatch.setattr(litellm, "callbacks", [rewriter])
    _run(litellm.aget_responses(response_id=created.id, custom_llm_provider="openai", api_base=UNREACHABLE))
    _run(
        litellm.adelete_responses(response_id=created.id, custom_llm_provider="openai", api_base=UNREACHABLE)
    )
    # LiteLLM passes call_type=None for these and names them on the logging object.
    assert rewriter.call_types == ["aget_responses", "adelete_responses"]
    assert [r.method for r in plain.recorded] == ["POST", "GET", "DELETE"]
    # litellm.anthropic.messages.acreate binds its function at import: the hook is its door.
    headers = {"extra_headers": {"Authorization": f"Bearer {STATIC_KEY}"}}
    monkeypatch.setattr(litellm, "callbacks", [_Rewriter(anthropic.base_url, headers)])
    _run(
        litellm.anthropic.messages.acreate(
            model="anthropic/claude-haiku-4-5", messages=MESSAGES, max_tokens=10, api_base=UNREACHABLE
        )
    )
    assert [r.route for r in anthropic.recorded] == ["/v1/messages"]


class _StaticBearer(httpx.Auth):
    """What the plugin's auth does, with a fixed key: the bearer is written as the request leaves."""

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {STATIC_KEY}"
        yield request


PLACEHOLDER = "placeholder-key"
# Endpoints that honour an openai SDK client: route, and the call with client= at api_base.
OPENAI_CLIENT_CALLS: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
    "chat": (
        "/v1/chat/completions",
        lambda c, b: litellm.completion(
            model="openai/m", messages=MESSAGES, client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "embedding": (
        "/v1/embeddings",
        lambda c, b: litellm.embedding(
            model="openai/m", input=["a"], client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "text_completion": (
        "/v1/completions",
        lambda c, b: litellm.text_completion(
            model="openai/gpt-3.5-turbo-instruct", prompt="hi", client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "image_generation": (
        "/v1/images/generations",
        lambda c, b: litellm.image_generation(
            model="openai/dall-e-3", prompt="hi", client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "transcription": (
        "/v1/audio/transcriptions",
        lambda c, b: litellm.transcription(
            model="openai/whisper-1", file=AUDIO, client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "speech": (
        "/v1/audio/speech",
        lambda c, b: litellm.speech(
            model="openai/tts-1", input="hi", voice="alloy", client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "moderation": (
        "/v1/moderations",
        lambda c, b: litellm.moderation(
            model="openai/omni-moderation-latest", input="hi", client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
}
# Endpoints that honour only LiteLLM's HTTPHandler: gateway (index), route, and the call.
HTTP_CLIENT_CALLS: dict[str, tuple[int, str, Callable[[Any, str], Any]]] = {
    "responses": (
        0,
        "/v1/responses",
        lambda c, b: litellm.responses(
            model="openai/gpt-4.1-mini", input="hi", client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "rerank": (
        0,
        "/v1/rerank",
        lambda c, b: litellm.rerank(
            model="hosted_vllm/rr", query="q", documents=["a"], client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
    "anthropic": (
        2,
        "/v1/messages",
        lambda c, b: litellm.completion(
            model="anthropic/claude-haiku-4-5", messages=MESSAGES, client=c, api_base=b, api_key=PLACEHOLDER
        ),
    ),
}


def _http_handler() -> HTTPHandler:
    return HTTPHandler(client=httpx.Client(auth=_StaticBearer()))


@pytest.mark.parametrize("endpoint", [*OPENAI_CLIENT_CALLS, *HTTP_CLIENT_CALLS])
def test_client_kind_per_endpoint(
    endpoint: str, gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere]
) -> None:
    """An openai SDK client carries chat, embeddings, text completions, images, audio and moderation
    (its base URL and key win over the call's); a LiteLLM ``HTTPHandler`` carries responses, rerank
    and Anthropic, where an openai SDK client is silently replaced by LiteLLM's own client (the
    gateway sees the call's placeholder key)."""
    elsewhere = gateways[3]
    if endpoint in OPENAI_CLIENT_CALLS:
        route, call = OPENAI_CLIENT_CALLS[endpoint]
        gateway: Any = gateways[0]
        call(openai.OpenAI(api_key=STATIC_KEY, base_url=gateway.base_url, max_retries=0), elsewhere.url)
        (honoured,) = gateway.recorded
    else:
        index, route, call = HTTP_CLIENT_CALLS[endpoint]
        gateway = gateways[index]
        call(_http_handler(), gateway.base_url)
        # The gateway's 401 body is OpenAI's shape: LiteLLM 1.108 maps it to BadRequestError.
        openai_shaped = index == 0 and not INVALID_REQUEST_401_IS_AUTHENTICATION_ERROR
        with pytest.raises(litellm.BadRequestError if openai_shaped else litellm.AuthenticationError):
            call(
                openai.OpenAI(api_key=STATIC_KEY, base_url=gateway.base_url, max_retries=0), gateway.base_url
            )
        honoured, ignored = gateway.recorded
        assert ignored.route == route
        assert STATIC_KEY not in json.dumps(ignored.headers) and PLACEHOLDER in json.dumps(ignored.headers)
    assert elsewhere.seen == []
    assert honoured.route == route
    assert honoured.headers["authorization"] == f"Bearer {STATIC_KEY}"


def test_azure_images_ignore_client(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
) -> None:
    azure = gateways[1]
    client = openai.AzureOpenAI(
        azure_endpoint=azure.base_url, api_version="2024-10-21", azure_ad_token=STATIC_KEY, max_retries=0
    )
    with pytest.raises(litellm.AuthenticationError):
        litellm.image_generation(
            model="azure/dep1",
            prompt="hi",
            client=client,
            api_base=azure.base_url,
            api_version="2024-10-21",
            api_key=PLACEHOLDER,
        )
    (request,) = azure.recorded
    assert request.route == "/openai/deployments/dep1/images/generations"
    assert request.headers.get("api-key") == PLACEHOLDER and "authorization" not in request.headers
    # The OpenAI handler with the same AzureOpenAI client reaches the same path with the bearer.
    litellm.image_generation(model="openai/dep1", prompt="hi", client=client, api_key=PLACEHOLDER)
    assert [r.route for r in azure.recorded][-1] == "/openai/deployments/dep1/images/generations"
    assert azure.recorded[-1].headers["authorization"] == f"Bearer {STATIC_KEY}"


def test_azure_client_fixes_api_version(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
) -> None:
    azure = gateways[1]
    client = openai.AzureOpenAI(
        azure_endpoint=azure.base_url, api_version="2024-06-01", azure_ad_token=STATIC_KEY, max_retries=0
    )
    litellm.completion(
        model="azure/dep1",
        messages=MESSAGES,
        client=client,
        api_base=azure.base_url,
        api_version="2025-01-01-preview",
    )
    assert [r.api_version for r in azure.recorded] == ["2024-06-01"]


def test_responses_api_version_read(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
) -> None:
    """LiteLLM 1.109+ sends an Azure Responses call's ``responses_api_version``; 1.108 its ``api_version``."""
    azure = gateways[1]
    litellm.responses(
        model="azure/dep1",
        input="hi",
        client=_http_handler(),
        api_base=azure.base_url,
        api_key=PLACEHOLDER,
        api_version="2024-06-01",
        responses_api_version="2025-04-01-preview",
    )
    sent = "2025-04-01-preview" if RESPONSES_API_VERSION_READ else "2024-06-01"
    assert [r.api_version for r in azure.recorded] == [sent]
    assert RESPONSES_API_VERSION_READ is (LITELLM_VERSION >= (1, 109))


def test_hosted_vllm_rerank_path(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
) -> None:
    gateway = gateways[0]
    response = litellm.rerank(
        model="hosted_vllm/rr",
        query="blue",
        documents=["red", "blue"],
        api_base=gateway.base_url,
        api_key=STATIC_KEY,
    )
    assert [r.route for r in gateway.recorded] == ["/v1/rerank"]  # {api_base}/rerank
    assert [item["index"] for item in response.results] == [1, 0]


def test_anthropic_messages_path(
    gateways: tuple[OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream, Elsewhere],
) -> None:
    anthropic = gateways[2]
    arguments: dict[str, Any] = {"messages": MESSAGES, "api_base": anthropic.base_url, "api_key": PLACEHOLDER}
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(model="anthropic/claude-haiku-4-5", **arguments)
    with pytest.raises(Exception, match=r"401|authentication"):
        _run(
            litellm.anthropic.messages.acreate(model="anthropic/claude-haiku-4-5", max_tokens=10, **arguments)
        )
    with pytest.raises(ValueError, match="not implemented for sync calls"):
        litellm.anthropic.messages.create(model="anthropic/claude-haiku-4-5", max_tokens=10, **arguments)
    assert [r.route for r in anthropic.recorded] == ["/v1/messages"] * 2
    for request in anthropic.recorded:
        assert request.headers["x-api-key"] == PLACEHOLDER and request.headers.get("anthropic-version")


def test_http_client_builders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builders the plugin calls to build clients as LiteLLM would, with their signatures."""
    monkeypatch.setattr(litellm, "ssl_verify", False)
    assert http_handler.get_ssl_configuration(None) is False  # LiteLLM's own setting when the call has none
    assert http_handler.get_ssl_configuration(True) is not False
    assert isinstance(http_handler.http2_enabled(), bool)
    ssl_config = http_handler.get_ssl_configuration(True)
    transport = http_handler.AsyncHTTPHandler.create_async_transport(
        ssl_context=ssl_config if isinstance(ssl_config, ssl.SSLContext) else None,
        ssl_verify=ssl_config if isinstance(ssl_config, bool) else None,
    )
    mounts = http_handler.AsyncHTTPHandler.create_httpx_proxy_mounts(transport, verify=ssl_config, cert=None)
    assert transport is None or isinstance(transport, httpx.AsyncBaseTransport)
    assert mounts is None or isinstance(mounts, dict)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_ssl_context_reaches_every_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    import asyncio

    import httpx

    from litellm_oauth2._compat import async_http_client
    from litellm_oauth2.testing._tls import PrivateCA

    monkeypatch.delenv("DISABLE_AIOHTTP_TRANSPORT", raising=False)
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", transport == "httpx")
    ca = PrivateCA(tmp_path / "pki")
    certificate = ca.issue("gateway-client")
    gateway = OpenAIUpstream(static_api_key=STATIC_KEY)
    gateway.tls = ca.server_context(require_client_certificate=True)

    async def call(url: str) -> int:
        files = (str(certificate.certificate_path), str(certificate.key_path), None)
        async with async_http_client(str(ca.ca_path), httpx.Auth(), False, files) as client:
            response = await client.get(url, headers={"Authorization": f"Bearer {STATIC_KEY}"})
            return response.status_code

    with gateway:
        assert asyncio.run(call(gateway.base_url + "/models")) == 200
        assert gateway.last_request.client_certificate == certificate.der
    assert litellm.llms.custom_httpx.http_handler.get_ssl_verify(str(ca.ca_path)) == str(ca.ca_path)
