"""Every code block of the README runs (or, for configuration, validates) against the loopback servers."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from helpers import SECRET, provider_dict

from litellm_oauth2 import OAuth2Config
from litellm_oauth2.testing import OpenAIUpstream, TokenServer

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
BLOCKS = [(language, body) for language, body in BLOCK.findall((ROOT / "README.md").read_text())]
# Commands for a fresh machine or a package index: .ci/run executes the same steps.
NOT_RUN_HERE = ("python3 -m venv", ". .venv/bin/activate && pytest", "pip install", "ruff check")


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCKS if lang == language]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], OpenAIUpstream]]:
    with TokenServer() as tokens, OpenAIUpstream(tokens) as gateway:
        tokens.add_client("test-client", SECRET)
        settings = provider_dict(tokens.token_url, api_base=gateway.base_url)
        (tmp_path / "litellm_config.json").write_text(
            json.dumps({"oauth2_providers": {"my_provider": settings}})
        )
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
def test_json_blocks_are_valid_configurations(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    document = json.loads(blocks("json")[index])
    for name in re.findall(r"os\.environ/(\w+)", blocks("json")[index]):
        monkeypatch.setenv(name, "redis://127.0.0.1:6379/0" if name.endswith("_URL") else "value-from-env")
    config = OAuth2Config.from_dict(document)
    assert config.oauth2_providers


def test_yaml_block_is_a_proxy_config_using_the_handler() -> None:
    (proxy_config,) = blocks("yaml")
    document = yaml.safe_load(proxy_config)
    assert document["litellm_settings"]["callbacks"] == ["litellm_oauth2.proxy_handler"]
    assert document["model_list"][0]["litellm_params"]["model"].startswith("my_provider/")


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_blocks_run(index: int, workdir: tuple[Path, dict[str, str], OpenAIUpstream]) -> None:
    path, env, gateway = workdir
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
    if "TokenServer()" not in block:
        assert gateway.requests >= 1, "the block did not reach the configured gateway"
    assert SECRET not in result.stdout + result.stderr


def shell_commands() -> list[str]:
    commands = []
    for body in blocks("bash"):
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
