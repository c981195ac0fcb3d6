"""Every code block of the README runs (or, for configuration, validates) against the loopback servers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from helpers import SECRET, provider_dict
from test_proxy import free_port, stop

from litellm_oauth2 import OAuth2Config
from litellm_oauth2.testing import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer
from litellm_oauth2.testing._tls import PrivateCA

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [(language, body) for language, body in BLOCK.findall((ROOT / "README.md").read_text())]
# Commands for a fresh machine or a package index: .ci/run executes the same steps.
NOT_RUN_HERE = ("python3 -m venv", ". .venv/bin/activate && pytest", "pip install", "ruff check")
# The proxy section's two blocks: a server and a client, run together by test_proxy_section_runs.
PROXY_START, PROXY_CALL = "litellm --config", "curl "
README_PORT = "4000"
NOWHERE = "http://127.0.0.1:9/v1"  # a gateway the error example never reaches


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


@pytest.fixture
def dialects() -> Iterator[tuple[TokenServer, OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream]]:
    """The token server and one gateway per ``api_style``, behind the README's provider names."""
    with (
        TokenServer() as tokens,
        OpenAIUpstream(tokens) as gateway,
        AzureOpenAIUpstream(tokens) as azure,
        AnthropicUpstream(tokens) as claude,
    ):
        tokens.add_client("test-client", SECRET)
        yield tokens, gateway, azure, claude


@pytest.fixture
def workdir(
    tmp_path: Path, dialects: tuple[TokenServer, OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream]
) -> Iterator[tuple[Path, dict[str, str], OpenAIUpstream]]:
    tokens, gateway, azure, claude = dialects
    providers = {
        "my_provider": provider_dict(tokens.token_url, api_base=gateway.base_url),
        "azure_apim": provider_dict(tokens.token_url, api_base=azure.base_url, api_style="azure"),
        "claude_gw": provider_dict(tokens.token_url, api_base=claude.base_url, api_style="anthropic"),
    }
    (tmp_path / "litellm_config.json").write_text(json.dumps({"oauth2_providers": providers}))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LITELLM_OAUTH2_CONFIG", None)
    yield tmp_path, env, gateway


def test_the_readme_has_the_blocks_this_file_runs() -> None:
    assert len(blocks("python")) >= 3 and len(blocks("json")) >= 2 and len(blocks("bash")) >= 4
    assert (
        blocks("bash")[0].startswith("python3 -m venv .venv") and "litellm-oauth2 demo" in blocks("bash")[0]
    )
    assert "pytest" in blocks("bash")[1]
    assert "pytest" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("index", range(len(blocks("json"))))
def test_json_blocks_are_valid_configurations(
    index: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    document = json.loads(_with_certificate_files(blocks("json")[index], tmp_path))
    for name in re.findall(r"os\.environ/(\w+)", blocks("json")[index]):
        monkeypatch.setenv(name, "redis://127.0.0.1:6379/0" if name.endswith("_URL") else "value-from-env")
    config = OAuth2Config.from_dict(document)
    assert config.oauth2_providers


def _with_certificate_files(block: str, directory: Path) -> str:
    """The mTLS example's /etc/tls files, made by a private CA (the key encrypted with the value
    its os.environ/ password reference resolves to): the files are checked at load."""
    if "/etc/tls/" not in block:
        return block
    ca = PrivateCA(directory / "pki")
    client = ca.issue("chat-app", password=b"value-from-env")
    for placeholder, path in (
        ("/etc/tls/client/tls.crt", client.certificate_path),
        ("/etc/tls/client/tls.key", client.key_path),
        ("/etc/tls/ca/ca.crt", ca.ca_path),
    ):
        block = block.replace(placeholder, str(path))
    return block


def test_yaml_block_is_a_proxy_config_using_the_handler() -> None:
    (proxy_config,) = blocks("yaml")
    document = yaml.safe_load(proxy_config)
    assert document["litellm_settings"]["callbacks"] == ["litellm_oauth2.proxy_handler"]
    assert document["model_list"][0]["litellm_params"]["model"].startswith("my_provider/")


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_blocks_run(
    index: int,
    workdir: tuple[Path, dict[str, str], OpenAIUpstream],
    dialects: tuple[TokenServer, OpenAIUpstream, AzureOpenAIUpstream, AnthropicUpstream],
) -> None:
    path, env, _ = workdir
    gateway = next(
        (g for g in dialects[1:] if type(g).__name__ == _style_of(blocks("python")[index])), dialects[1]
    )
    block = blocks("python")[index]
    result = subprocess.run(
        [sys.executable, "-c", block],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    if "print(response" in block or "print(reply" in block:
        assert "Hello from upstream" in result.stdout
    else:
        assert result.stdout == "", "the error example took an error branch"
    if "TokenServer(" not in block:
        assert gateway.requests >= 1, "the block did not reach the configured gateway"
    assert SECRET not in result.stdout + result.stderr


def _style_of(block: str) -> str:
    """The gateway class a README block's calls go to, by the provider it names."""
    if "azure_apim/" in block:
        return "AzureOpenAIUpstream"
    return "AnthropicUpstream" if "claude_gw/" in block else "OpenAIUpstream"


def shell_commands() -> list[str]:
    commands = []
    for body in blocks("bash"):
        if PROXY_START in body or PROXY_CALL in body:
            continue
        for line in body.splitlines():
            command = line.split("  #")[0].strip()
            if command and not command.startswith(NOT_RUN_HERE) and command != "litellm-oauth2 demo":
                commands.append(command)
    return commands


@pytest.mark.parametrize("command", shell_commands())
def test_shell_commands_run(command: str, workdir: tuple[Path, dict[str, str], OpenAIUpstream]) -> None:
    path, env, gateway = workdir
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", "-c", command], cwd=path, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, f"{shlex.quote(command)}: {result.stderr[-3000:]}"
    assert gateway.requests >= 1 or "token" in command
    assert SECRET not in result.stdout + result.stderr


def block_with(language: str, text: str) -> str:
    (body,) = [body for body in blocks(language) if text in body]
    return body


def run_error_example(path: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", block_with("python", "except OAuth2AuthenticationError")],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert SECRET not in result.stdout + result.stderr
    return result.stdout


def test_error_example_says_why_there_is_no_token(tmp_path: Path) -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LITELLM_OAUTH2_CONFIG", None)
    config = tmp_path / "litellm_config.json"
    with TokenServer(key_type="HS256") as tokens:
        tokens.add_client("test-client", "another-secret")
        settings = provider_dict(tokens.token_url, api_base=NOWHERE)  # then the server is gone
    config.write_text(json.dumps({"oauth2_providers": {"my_provider": settings}}))
    down = run_error_example(tmp_path, env)
    assert "None None" not in down, down
    assert "my_provider" in down and "127.0.0.1" in down and "HTTP status: None" in down, down
    with tokens:  # up again, with another secret registered
        settings = provider_dict(tokens.token_url, api_base=NOWHERE)
        config.write_text(json.dumps({"oauth2_providers": {"my_provider": settings}}))
        refused = run_error_example(tmp_path, env)
    assert "my_provider" in refused and "invalid_client" in refused and "HTTP status: 401" in refused


def wait_for_proxy(url: str, server: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    """Until the proxy at ``url`` answers its liveness probe; fails if it exits or takes ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the proxy exited with status {server.returncode}"
        try:
            if requests.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail("the proxy was not live in time")


def test_proxy_section_runs(workdir: tuple[Path, dict[str, str], OpenAIUpstream]) -> None:
    """The proxy config, start command and curl, as written but on a free port (killed as a process group)."""
    path, env, gateway = workdir
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    (path / "config.yaml").write_text(block_with("yaml", "litellm_settings"))
    port = str(free_port())
    lines = [line.split("  #")[0] for line in block_with("bash", PROXY_START).splitlines()]
    lines = [line for line in lines if not line.startswith("pip install")]
    script = "\n".join([*lines[:-1], lines[-1].replace(f"--port {README_PORT}", f"--port {port}")])
    assert "export LITELLM_MASTER_KEY=" in script and f"--port {port}" in script
    call = block_with("bash", PROXY_CALL).replace(f":{README_PORT}/", f":{port}/")
    with (path / "proxy.log").open("w") as log:
        server = subprocess.Popen(
            ["bash", "-c", script],
            cwd=path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_for_proxy(f"http://127.0.0.1:{port}", server)
        result = subprocess.run(
            ["bash", "-c", call], cwd=path, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        stop(server)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"].startswith("Hello from upstream")
    assert gateway.authorized_requests == gateway.requests == 1
    assert SECRET not in (path / "proxy.log").read_text()
