"""The LiteLLM proxy, started as a subprocess, authenticating to the loopback gateway with OAuth2.

One proxy process serves the whole module. Its ``config.yaml`` loads the handler with
``litellm_settings: callbacks: ["litellm_oauth2.proxy_handler"]`` and then, listed after it, a
``custom_provider_map`` for another provider, which replaces ``litellm.custom_provider_map``
wholesale: the handler's pre-call hook must register the OAuth2 provider again, so every
test below also proves that. ``LITELLM_OAUTH2_CONFIG`` is set as well, so the autoload path
and the proxy callback meet in one process. The proxy runs with ``--detailed_debug``; its
output is scanned for the client secret and every issued token.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from litellm_oauth2.testing import OpenAIUpstream, RecordedRequest, TokenServer

MASTER_KEY = "sk-test-master"
CLIENT_ID = "proxy-client"
CLIENT_SECRET = "proxy-secret-5f2c9a7e-KNOWN"
PROVIDER = "my_provider"
OTHER_REPLY = "reply from the other provider"
EXPECTED_CONTENT = f"Hello from upstream (client_id={CLIENT_ID})"
REREGISTERED_LOG = "custom_provider_map was replaced; registering OAuth2 providers again"
STARTUP_TIMEOUT = 120.0
REQUEST_TIMEOUT = 60.0
# Import names of the packages in the `proxy` extra that the proxy needs to start.
PROXY_MODULES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "websockets",
    "orjson",
    "backoff",
    "apscheduler",
    "semver",
    "python_multipart",
    "expression",
    "fastapi_sso",
    "mcp",
    "soundfile",
    "jwt",
    "cryptography",
    "redis",
)

# Imported by the proxy from the config's directory (custom_provider_map's `custom_handler`).
OTHER_PROVIDER_MODULE = f'''
"""Another custom provider, listed after the OAuth2 callback in the proxy config."""

import logging
import sys

import litellm
from litellm.llms.custom_llm import CustomLLM

# Shows the plugin's INFO messages (its re-registration) in the proxy's stderr.
_handler = logging.StreamHandler(sys.stderr)
_handler.setFormatter(logging.Formatter("litellm_oauth2 log: %(message)s"))
logging.getLogger("litellm_oauth2").addHandler(_handler)
logging.getLogger("litellm_oauth2").setLevel(logging.INFO)


class OtherLLM(CustomLLM):
    def completion(self, *args, **kwargs):
        return litellm.completion(model="openai/mock-other", messages=kwargs["messages"], mock_response={OTHER_REPLY!r})

    async def acompletion(self, *args, **kwargs):
        return await litellm.acompletion(
            model="openai/mock-other", messages=kwargs["messages"], mock_response={OTHER_REPLY!r}
        )


other_llm = OtherLLM()
'''


@dataclass
class Proxy:
    url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    tokens: TokenServer
    upstream: OpenAIUpstream

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, chars: int = 4000) -> str:
        return self.stderr_path.read_text(errors="replace")[-chars:]

    def post(self, path: str, payload: dict[str, Any], **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        return requests.post(
            f"{self.url}{path}", json=payload, headers=headers, timeout=REQUEST_TIMEOUT, **kwargs
        )

    def chat(self, content: str = "hello", model: str = "chat") -> requests.Response:
        return self.post(
            "/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": content}]}
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the proxy's whole process group, then kill it if it does not exit."""
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def write_configs(directory: Path, tokens: TokenServer, upstream: OpenAIUpstream) -> Path:
    oauth2_config = {
        "oauth2_providers": {
            PROVIDER: {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "token_url": tokens.token_url,
                "api_base": upstream.base_url,
                "headers": {"X-Team": "blue"},
            }
        }
    }
    (directory / "litellm_config.json").write_text(json.dumps(oauth2_config, indent=2))
    (directory / "other_provider.py").write_text(textwrap.dedent(OTHER_PROVIDER_MODULE))
    proxy_config = {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": f"{PROVIDER}/chat-model"}},
            {"model_name": "embed", "litellm_params": {"model": f"{PROVIDER}/embedding-model"}},
            {"model_name": "other", "litellm_params": {"model": "other_provider/other-model"}},
        ],
        # Order matters: the proxy applies these keys in turn, and custom_provider_map replaces
        # litellm.custom_provider_map, OAuth2 entries included.
        "litellm_settings": {
            "callbacks": ["litellm_oauth2.proxy_handler"],
            "custom_provider_map": [
                {"provider": "other_provider", "custom_handler": "other_provider.other_llm"}
            ],
        },
        "general_settings": {"master_key": MASTER_KEY},
    }
    path = directory / "proxy.yaml"
    path.write_text(yaml.safe_dump(proxy_config, sort_keys=False))
    return path


def wait_until_live(proxy: Proxy) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            pytest.fail(
                f"the proxy exited with status {proxy.process.returncode} during startup; "
                f"stderr tail:\n{proxy.stderr_tail()}"
            )
        try:
            if requests.get(f"{proxy.url}/health/liveliness", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"the proxy was not live after {STARTUP_TIMEOUT:.0f} s; stderr tail:\n{proxy.stderr_tail()}")


def launch_proxy(directory: Path, config: Path) -> tuple[str, subprocess.Popen[bytes], Path, Path]:
    """Start ``litellm --config config`` on a free loopback port with the plugin's config file of
    ``directory``, output to files there; returns its URL, process and output files."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LITELLM_OAUTH2_")}
    env.update(
        LITELLM_OAUTH2_CONFIG=str(directory / "litellm_config.json"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    command = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--detailed_debug"]
    stdout_path, stderr_path = directory / "proxy.stdout", directory / "proxy.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return f"http://127.0.0.1:{port}", process, stdout_path, stderr_path


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    missing = [name for name in PROXY_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            f"the proxy extra is not installed (missing {', '.join(missing)}): pip install -e '.[proxy]'"
        )
    directory = tmp_path_factory.mktemp("proxy")
    with TokenServer() as tokens, OpenAIUpstream(tokens) as upstream:
        tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        config = write_configs(directory, tokens, upstream)
        url, process, stdout_path, stderr_path = launch_proxy(directory, config)
        running = Proxy(url, process, stdout_path, stderr_path, tokens, upstream)
        try:
            wait_until_live(running)
            yield running
        finally:
            stop(process)


def assert_authorized(proxy: Proxy, requests_seen: list[RecordedRequest]) -> None:
    """Every request carried a bearer token the token server issued to our client, and nothing else."""
    assert requests_seen
    for request in requests_seen:
        authorization = request.headers.get("authorization", "")
        assert authorization.startswith("Bearer "), f"no bearer token on {request.path}"
        claims = proxy.tokens.verify_access_token(authorization.removeprefix("Bearer "))
        assert claims is not None and claims["sub"] == CLIENT_ID
        assert request.headers.get("x-team") == "blue"
        assert MASTER_KEY not in json.dumps(request.headers) + request.body.decode("utf-8", "replace")


def new_requests(proxy: Proxy, before: int) -> list[RecordedRequest]:
    return proxy.upstream.recorded[before:]


def test_chat_completion_goes_out_with_a_valid_bearer_token(proxy: Proxy) -> None:
    before = len(proxy.upstream.recorded)

    response = proxy.chat()

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == EXPECTED_CONTENT
    seen = new_requests(proxy, before)
    assert [request.path for request in seen] == ["/v1/chat/completions"]
    assert seen[0].json["model"] == "chat-model"
    assert_authorized(proxy, seen)


def test_streaming_chat_is_relayed_as_server_sent_events(proxy: Proxy) -> None:
    before = len(proxy.upstream.recorded)
    payload = {"model": "chat", "messages": [{"role": "user", "content": "hello"}], "stream": True}

    with proxy.post("/v1/chat/completions", payload, stream=True) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [
            line[5:].strip() for line in response.iter_lines(decode_unicode=True) if line.startswith("data:")
        ]

    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    content = "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])
    assert content == EXPECTED_CONTENT
    seen = new_requests(proxy, before)
    assert len(seen) == 1 and seen[0].json["stream"] is True
    assert_authorized(proxy, seen)


def test_embeddings_go_out_with_a_valid_bearer_token(proxy: Proxy) -> None:
    before = len(proxy.upstream.recorded)

    response = proxy.post("/v1/embeddings", {"model": "embed", "input": ["first", "second"]})

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == [0, 1]
    assert all(len(item["embedding"]) == 8 for item in data)
    seen = new_requests(proxy, before)
    assert [request.path for request in seen] == ["/v1/embeddings"]
    assert seen[0].json["model"] == "embedding-model"
    assert_authorized(proxy, seen)


def test_a_401_from_the_gateway_is_retried_once_with_a_new_token(proxy: Proxy) -> None:
    assert proxy.chat().status_code == 200  # a cached token exists before the fault
    before, token_requests = len(proxy.upstream.recorded), proxy.tokens.token_requests
    proxy.upstream.fail_next(1, status=401)

    response = proxy.chat()

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == EXPECTED_CONTENT
    seen = new_requests(proxy, before)
    assert len(seen) == 2
    assert proxy.tokens.token_requests == token_requests + 1
    first, retry = (request.headers["authorization"] for request in seen)
    assert first != retry
    assert_authorized(proxy, seen[1:])


def test_oauth2_provider_routes_after_custom_provider_map_replaced_it(proxy: Proxy) -> None:
    before = len(proxy.upstream.recorded)

    other = proxy.chat(model="other")
    ours = proxy.chat(model="chat")

    assert other.status_code == 200, other.text
    assert other.json()["choices"][0]["message"]["content"] == OTHER_REPLY
    assert ours.status_code == 200, ours.text
    assert ours.json()["choices"][0]["message"]["content"] == EXPECTED_CONTENT
    assert len(new_requests(proxy, before)) == 1  # the other provider never reaches the gateway
    # The config really replaced the map, and the pre-call hook put the OAuth2 provider back.
    assert REREGISTERED_LOG in proxy.output()


def test_proxy_output_never_contains_the_secret_or_a_token(proxy: Proxy) -> None:
    # Traffic of every kind first, including a 401 retry that issues another token.
    proxy.upstream.fail_next(1, status=401)
    assert proxy.chat(content="leak check").status_code == 200
    assert proxy.post("/v1/embeddings", {"model": "embed", "input": "leak check"}).status_code == 200
    stream = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with proxy.post("/v1/chat/completions", stream, stream=True) as response:
        assert response.status_code == 200
        assert "[DONE]" in response.text
    time.sleep(1.0)  # logging after the response has been sent

    output = proxy.output()
    assert "LiteLLM:DEBUG" in output and "leak check" in output, "the debug output was not captured"
    basic = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert CLIENT_SECRET not in output
    assert basic not in output
    issued = proxy.tokens.issued_tokens
    assert len(issued) >= 2
    for token in issued:
        _header, payload, signature = token.split(".")
        assert token not in output
        assert payload not in output
        assert signature not in output
