"""``LITELLM_OAUTH2_DISABLE=1`` turns off activation by environment variable, and nothing else.

With it set, the ``.pth`` hook leaves LiteLLM alone even though ``LITELLM_OAUTH2_CONFIG`` names a
valid file; an explicit ``litellm_oauth2.enable()`` and the proxy's ``callbacks`` line still switch
the plugin on (and still read ``LITELLM_OAUTH2_CONFIG`` to find the file). Each case runs in a
fresh interpreter, so the ``.pth`` file runs as it would in an application.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from helpers import SECRET, provider_dict
from test_proxy import free_port, stop
from test_readme import wait_for_proxy

from litellm_oauth2.testing import OpenAIUpstream, TokenServer

CALL = """
import litellm
try:
    reply = litellm.completion(model="my_provider/m", messages=[{"role": "user", "content": "Hi"}])
except litellm.BadRequestError as exc:
    print("not routed:", "LLM Provider NOT provided" in str(exc))
else:
    print(reply.choices[0].message.content)
"""
ENABLE = "import litellm_oauth2\nlitellm_oauth2.enable()\n"


@dataclass
class World:
    directory: Path
    tokens: TokenServer
    gateway: OpenAIUpstream

    def env(self, *, disable: bool) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("LITELLM_OAUTH2_")}
        env.update(
            LITELLM_OAUTH2_CONFIG=str(self.directory / "oauth2.json"), LITELLM_LOCAL_MODEL_COST_MAP="True"
        )
        if disable:
            env["LITELLM_OAUTH2_DISABLE"] = "1"
        return env

    def run(self, code: str, *, disable: bool) -> str:
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=self.directory,  # no ./litellm_config.json here: only the variable names the file
            env=self.env(disable=disable),
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with TokenServer(key_type="HS256") as tokens, OpenAIUpstream(tokens) as gateway:
        tokens.add_client("test-client", SECRET)
        settings = provider_dict(tokens.token_url, api_base=gateway.base_url)
        (tmp_path / "oauth2.json").write_text(json.dumps({"oauth2_providers": {"my_provider": settings}}))
        yield World(tmp_path, tokens, gateway)


def test_disable_turns_off_activation_by_environment_variable(world: World) -> None:
    assert world.run(CALL, disable=False).startswith("Hello from upstream")  # the hook is live
    assert world.tokens.token_requests == 1 and world.gateway.requests == 1
    assert world.run(CALL, disable=True).endswith("not routed: True")
    assert world.tokens.token_requests == 1 and world.gateway.requests == 1


def test_disable_leaves_an_explicit_enable_working(world: World) -> None:
    assert world.run(ENABLE + CALL, disable=True).startswith("Hello from upstream")
    assert (
        world.tokens.token_requests == 1 and world.gateway.authorized_requests == world.gateway.requests == 1
    )


def test_disable_leaves_the_proxy_callback_working(world: World) -> None:
    proxy_config = {
        "model_list": [{"model_name": "chat", "litellm_params": {"model": "my_provider/chat-model"}}],
        "litellm_settings": {"callbacks": ["litellm_oauth2.proxy_handler"]},
        "general_settings": {"master_key": "sk-test-master"},
    }
    (world.directory / "proxy.yaml").write_text(yaml.safe_dump(proxy_config))
    port = free_port()
    command = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", "proxy.yaml"]
    with (world.directory / "proxy.log").open("w") as log:
        server = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=world.directory,
            env=world.env(disable=True),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_proxy(url, server)
        reply = requests.post(
            f"{url}/v1/chat/completions",
            json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"Authorization": "Bearer sk-test-master"},
            timeout=60,
        )
    finally:
        stop(server)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("Hello from upstream")
    assert (
        world.tokens.token_requests == 1 and world.gateway.authorized_requests == world.gateway.requests == 1
    )
