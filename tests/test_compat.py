"""The LiteLLM facts ``litellm_oauth2._compat`` relies on, one test each, named after the fact.

Each fact test makes a real LiteLLM call with a recording ``CustomLLM`` registered under the
name in question, so a LiteLLM upgrade that changes how names are routed fails the test
that names the fact. The list of names refused at registration is computed from LiteLLM
here, independently of ``_compat``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from litellm.llms.custom_llm import CustomLLM
from litellm.llms.openai_like.json_loader import JSONProviderRegistry
from litellm.types.utils import LlmProvidersSet

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2._compat import litellm_routed_names
from litellm_oauth2.errors import OAuth2ValidationError
from litellm_oauth2.testing import OpenAIUpstream, TokenServer

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
