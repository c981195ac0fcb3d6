"""The LiteLLM proxy serving openai-, azure- and anthropic-style models of OAuth2 providers.

One proxy process for the module (started as ``tests/test_proxy.py`` starts it, with the plugin's
``litellm_oauth2.proxy_handler`` callback and ``--detailed_debug``), in front of the three loopback
gateways. Each route the proxy exposes for these endpoints must reach the expected gateway path
with a bearer token our client was issued, and the proxy's output must hold no token or secret.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import AZURE_DATED_RESPONSES
from test_proxy import PROXY_MODULES, REQUEST_TIMEOUT, launch_proxy, stop, wait_until_live

from litellm_oauth2.testing import (
    AnthropicUpstream,
    AzureOpenAIUpstream,
    OpenAIUpstream,
    RecordedRequest,
    TokenServer,
)

Gateway = OpenAIUpstream | AzureOpenAIUpstream | AnthropicUpstream
MASTER_KEY = "sk-endpoints-master"
CLIENT_ID = "proxy-endpoints-client"
CLIENT_SECRET = "proxy-endpoints-secret-KNOWN-4d1e"
GREETING = f"Hello from upstream (client_id={CLIENT_ID})"
AZURE_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Proxy:
    url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    tokens: TokenServer
    gateways: dict[str, Gateway]

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, chars: int = 4000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def post(self, path: str, payload: dict[str, Any], **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        return requests.post(
            f"{self.url}{path}", json=payload, headers=headers, timeout=REQUEST_TIMEOUT, **kwargs
        )

    def upload(self, path: str, data: dict[str, str], files: dict[str, Any]) -> requests.Response:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        return requests.post(
            f"{self.url}{path}", data=data, files=files, headers=headers, timeout=REQUEST_TIMEOUT
        )


def write_configs(directory: Path, tokens: TokenServer, gateways: dict[str, Gateway]) -> Path:
    client = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_url": tokens.token_url}
    oauth2_config = {
        "oauth2_providers": {
            "corp": {**client, "api_base": gateways["openai"].base_url},
            "az": {
                **client,
                "api_base": gateways["azure"].base_url,
                "api_style": "azure",
                "api_version": AZURE_VERSION,
            },
            "cl": {
                **client,
                "api_base": gateways["anthropic"].base_url,
                "api_style": "anthropic",
            },
        }
    }
    (directory / "litellm_config.json").write_text(json.dumps(oauth2_config, indent=2))
    models = {
        "gpt": "corp/gpt-4.1-mini",
        "embed": "corp/embed-model",
        "image": "corp/dall-e-3",
        "whisper": "corp/whisper-1",
        "azure-chat": "az/dep1",
        "azure-embed": "az/dep1",
        "azure-image": "az/dep1",
        "azure-whisper": "az/dep1",
        "azure-responses": "az/dep1",
        "claude": "cl/claude-haiku-4-5",
    }
    proxy_config = {
        "model_list": [
            {"model_name": name, "litellm_params": {"model": model}} for name, model in models.items()
        ],
        "litellm_settings": {"callbacks": ["litellm_oauth2.proxy_handler"]},
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = directory / "proxy.yaml"
    path.write_text(yaml.safe_dump(proxy_config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    # The proxy's /v1/responses route imports nacl (PyNaCl, in the `proxy` extra).
    missing = [name for name in (*PROXY_MODULES, "nacl") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"the proxy extra is not installed (missing {', '.join(missing)}): pip install -e '.[proxy]'"
        )
    directory = tmp_path_factory.mktemp("proxy_endpoints")
    with (
        TokenServer() as tokens,
        OpenAIUpstream(tokens) as plain,
        AzureOpenAIUpstream(tokens) as azure,
        AnthropicUpstream(tokens) as anthropic,
    ):
        tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        gateways: dict[str, Gateway] = {"openai": plain, "azure": azure, "anthropic": anthropic}
        config = write_configs(directory, tokens, gateways)
        url, process, stdout_path, stderr_path = launch_proxy(directory, config)
        running = Proxy(url, process, stdout_path, stderr_path, tokens, gateways)
        try:
            wait_until_live(running)  # type: ignore[arg-type]  # reads url, process, stderr_tail
            yield running
        finally:
            stop(process)


@pytest.fixture(autouse=True)
def _empty_gateways(proxy: Proxy) -> None:
    for gateway in proxy.gateways.values():
        gateway.reset()


def assert_reached(proxy: Proxy, style: str, method: str, route: str, api_version: str | None = None) -> None:
    """Exactly one request, at ``route`` of the ``style`` gateway, with a bearer token of our client."""
    seen: list[RecordedRequest] = proxy.gateways[style].recorded
    assert [(r.method, r.route) for r in seen] == [(method, route)]
    assert sum(g.requests for g in proxy.gateways.values()) == 1
    (request,) = seen
    assert request.api_version == api_version
    claims = proxy.tokens.verify_access_token(request.headers["authorization"].removeprefix("Bearer "))
    assert claims is not None and claims["sub"] == CLIENT_ID
    assert "api-key" not in request.headers and "x-api-key" not in request.headers
    assert MASTER_KEY not in json.dumps(request.headers) + request.body.decode("utf-8", "replace")


def sse_events(response: requests.Response) -> list[Any]:
    data = [line[5:].strip() for line in response.iter_lines(decode_unicode=True) if line.startswith("data:")]
    return [json.loads(item) for item in data if item != "[DONE]"]


CHAT = {
    "openai": ("gpt", "/v1/chat/completions", None),
    "azure": ("azure-chat", "/openai/deployments/dep1/chat/completions", AZURE_VERSION),
    "anthropic": ("claude", "/v1/messages", None),
}


@pytest.mark.parametrize("style", CHAT)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_chat_completions(proxy: Proxy, style: str, stream: bool) -> None:
    model, route, version = CHAT[style]
    payload = {"model": model, "messages": MESSAGES, "stream": stream}
    with proxy.post("/v1/chat/completions", payload, stream=stream) as response:
        assert response.status_code == 200, response.text
        if stream:
            text = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in sse_events(response) if c["choices"]
            )
        else:
            text = response.json()["choices"][0]["message"]["content"]
    assert text == GREETING
    assert_reached(proxy, style, "POST", route, version)


RESPONSES = {
    "openai": ("gpt", "/v1/responses", None),
    "azure": ("azure-responses", AZURE_DATED_RESPONSES[0], AZURE_DATED_RESPONSES[1] or AZURE_VERSION),
}


@pytest.mark.parametrize("style", RESPONSES)
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_responses(proxy: Proxy, style: str, stream: bool) -> None:
    model, route, version = RESPONSES[style]
    with proxy.post(
        "/v1/responses", {"model": model, "input": "hi", "stream": stream}, stream=stream
    ) as response:
        assert response.status_code == 200, response.text
        if stream:
            events = sse_events(response)
            text = "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")
        else:
            text = response.json()["output"][0]["content"][0]["text"]
    assert text == GREETING
    assert_reached(proxy, style, "POST", route, version)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_messages(proxy: Proxy, stream: bool) -> None:
    payload = {"model": "claude", "messages": MESSAGES, "max_tokens": 20, "stream": stream}
    with proxy.post("/v1/messages", payload, stream=stream) as response:
        assert response.status_code == 200, response.text
        if stream:
            events = sse_events(response)
            text = "".join(e["delta"]["text"] for e in events if e.get("type") == "content_block_delta")
        else:
            text = response.json()["content"][0]["text"]
    assert text == GREETING
    assert_reached(proxy, "anthropic", "POST", "/v1/messages")


@pytest.mark.parametrize(
    ("style", "model", "route", "version"),
    [
        ("openai", "embed", "/v1/embeddings", None),
        ("azure", "azure-embed", "/openai/deployments/dep1/embeddings", AZURE_VERSION),
    ],
    ids=["openai", "azure"],
)
def test_embeddings(proxy: Proxy, style: str, model: str, route: str, version: str | None) -> None:
    response = proxy.post("/v1/embeddings", {"model": model, "input": ["a", "b"]})
    assert response.status_code == 200, response.text
    assert [len(item["embedding"]) for item in response.json()["data"]] == [8, 8]
    assert_reached(proxy, style, "POST", route, version)


@pytest.mark.parametrize(
    ("style", "model", "route", "version"),
    [
        ("openai", "image", "/v1/images/generations", None),
        ("azure", "azure-image", "/openai/deployments/dep1/images/generations", AZURE_VERSION),
    ],
    ids=["openai", "azure"],
)
def test_image_generations(proxy: Proxy, style: str, model: str, route: str, version: str | None) -> None:
    response = proxy.post("/v1/images/generations", {"model": model, "prompt": "a cat"})
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["revised_prompt"] == f"a cat ({GREETING})"
    assert_reached(proxy, style, "POST", route, version)


@pytest.mark.parametrize(
    ("style", "model", "route", "version"),
    [
        ("openai", "whisper", "/v1/audio/transcriptions", None),
        ("azure", "azure-whisper", "/openai/deployments/dep1/audio/transcriptions", AZURE_VERSION),
    ],
    ids=["openai", "azure"],
)
def test_audio_transcriptions_multipart(
    proxy: Proxy, style: str, model: str, route: str, version: str | None
) -> None:
    files = {"file": ("a.wav", b"RIFF0000WAVEfmt ", "audio/wav")}
    response = proxy.upload("/v1/audio/transcriptions", {"model": model}, files)
    assert response.status_code == 200, response.text
    assert response.json()["text"].startswith(f"{GREETING} heard a.wav (16 bytes)")
    assert_reached(proxy, style, "POST", route, version)
    assert proxy.gateways[style].recorded[0].files["file"].data == b"RIFF0000WAVEfmt "


def _stream_text(response: requests.Response, kind: str) -> str:
    events = sse_events(response)
    if kind == "messages":
        return "".join(e["delta"]["text"] for e in events if e.get("type") == "content_block_delta")
    return "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")


RETRIED: dict[str, tuple[str, Callable[[Proxy], str]]] = {
    "messages stream": (
        "anthropic",
        lambda p: _stream_text(
            p.post(
                "/v1/messages",
                {"model": "claude", "messages": MESSAGES, "max_tokens": 20, "stream": True},
                stream=True,
            ),
            "messages",
        ),
    ),
    "responses stream": (
        "openai",
        lambda p: _stream_text(
            p.post("/v1/responses", {"model": "gpt", "input": "hi", "stream": True}, stream=True), "responses"
        ),
    ),
    "azure responses": (
        "azure",
        lambda p: p.post("/v1/responses", {"model": "azure-responses", "input": "hi"}).json()["output"][0][
            "content"
        ][0]["text"],
    ),
    "transcriptions multipart": (
        "openai",
        lambda p: p.upload(
            "/v1/audio/transcriptions",
            {"model": "whisper"},
            {"file": ("a.wav", b"RIFF0000WAVEfmt ", "audio/wav")},
        ).json()["text"],
    ),
    "azure images": (
        "azure",
        lambda p: p.post("/v1/images/generations", {"model": "azure-image", "prompt": "x"}).json()["data"][0][
            "revised_prompt"
        ],
    ),
}


@pytest.mark.parametrize("name", RETRIED)
def test_a_401_is_retried_once_with_a_new_token(proxy: Proxy, name: str) -> None:
    style, call = RETRIED[name]
    assert GREETING in call(proxy)  # a token is cached before the fault
    proxy.gateways[style].reset()
    before = proxy.tokens.token_requests
    proxy.gateways[style].fail_next(1, 401)
    text = call(proxy)
    assert GREETING in text and text.count(GREETING) == 1
    seen = proxy.gateways[style].recorded
    assert len(seen) == 2 and seen[0].route == seen[1].route
    assert seen[0].body == seen[1].body  # the request, multipart included, is replayed whole
    first, retry = (r.headers["authorization"] for r in seen)
    assert proxy.tokens.verify_access_token(retry.removeprefix("Bearer "))
    # The providers share one client, so one token identity: after a refusal it fetches a new
    # token at most once per REFETCH_AFTER_401_SECONDS, and a retry within that window reuses it.
    new_tokens = proxy.tokens.token_requests - before
    assert (new_tokens, first != retry) in {(1, True), (0, False)}


@pytest.mark.parametrize(
    ("path", "payload", "endpoint"),
    [
        ("/v1/embeddings", {"model": "claude", "input": "a"}, "embedding"),
        ("/v1/responses", {"model": "claude", "input": "a"}, "responses"),
        ("/v1/messages", {"model": "gpt", "messages": MESSAGES, "max_tokens": 10}, "anthropic_messages"),
    ],
    ids=["anthropic embeddings", "anthropic responses", "openai messages"],
)
def test_an_endpoint_the_style_cannot_serve_is_refused_with_nothing_sent(
    proxy: Proxy, path: str, payload: dict[str, Any], endpoint: str
) -> None:
    before = proxy.tokens.token_requests
    response = proxy.post(path, payload)
    assert response.status_code >= 400
    assert f"cannot serve {endpoint}" in response.text
    assert sum(g.requests for g in proxy.gateways.values()) == 0
    assert proxy.tokens.token_requests == before


def test_proxy_output_never_contains_the_secret_or_a_token(proxy: Proxy) -> None:
    # Traffic on the new routes first (the other tests may run alone).
    assert proxy.post("/v1/responses", {"model": "gpt", "input": "leak check"}).status_code == 200
    payload = {"model": "claude", "messages": MESSAGES, "max_tokens": 20}
    assert proxy.post("/v1/messages", payload).status_code == 200
    assert proxy.post("/v1/images/generations", {"model": "azure-image", "prompt": "x"}).status_code == 200
    time.sleep(1.0)  # logging after the response has been sent
    output = proxy.output()
    assert "LiteLLM" in output and "leak check" in output, "the debug output was not captured"
    assert CLIENT_SECRET not in output
    issued = proxy.tokens.issued_tokens
    assert issued
    for token in issued:
        _header, _claims, signature = token.split(".")
        assert token not in output
        assert signature not in output
