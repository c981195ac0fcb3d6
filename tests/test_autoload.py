"""Activation by environment variable alone: unchanged scripts, run as fresh interpreters.

``litellm_oauth2_autoload.pth`` (installed with the package) runs at interpreter start; with
``LITELLM_OAUTH2_CONFIG`` set, ``import litellm`` registers the handler. Each test runs a
script in a subprocess, so the ``.pth``, the import hook and LiteLLM start from scratch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml as yaml_module

from litellm_oauth2.testing import OpenAIUpstream, TokenServer

CLIENT_ID = "autoload-client"
CLIENT_SECRET = "autoload-secret-3b7d1e-KNOWN"
PROVIDER = "demo_provider"
EXPECTED_CONTENT = f"Hello from upstream (client_id={CLIENT_ID})"
SUBPROCESS_TIMEOUT = 180.0
RESULT_PREFIX = "RESULT "

# What a user's application looks like: LiteLLM only, no mention of the plugin.
UNCHANGED_SCRIPT = """
import asyncio
import json

import litellm

messages = [{"role": "user", "content": "hello"}]
reply = litellm.completion(model="demo_provider/chat-model", messages=messages)
stream = litellm.completion(model="demo_provider/chat-model", messages=messages, stream=True)
streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
vectors = litellm.embedding(model="demo_provider/embedding-model", input=["first", "second"])


async def main():
    reply = await litellm.acompletion(model="demo_provider/chat-model", messages=messages)
    stream = await litellm.acompletion(model="demo_provider/chat-model", messages=messages, stream=True)
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    return reply.choices[0].message.content, streamed


areply, astreamed = asyncio.run(main())
print("RESULT " + json.dumps({
    "completion": reply.choices[0].message.content,
    "streaming": streamed,
    "embedding": [len(item["embedding"]) for item in vectors.data],
    "acompletion": areply,
    "astreaming": astreamed,
}))
"""

# The same application calling an OAuth2 provider while the plugin is switched off.
SINGLE_CALL_SCRIPT = """
import json

import litellm

try:
    litellm.completion(model="demo_provider/chat-model", messages=[{"role": "user", "content": "hello"}])
    outcome = {"raised": None}
except Exception as exc:
    outcome = {"raised": type(exc).__name__, "message": str(exc)}
print("RESULT " + json.dumps(outcome))
"""

# A broken configuration: LiteLLM and unrelated imports still work, each call for the provider
# raises what the user catches, and other providers are unaffected.
BROKEN_CONFIG_SCRIPT = """
import asyncio
import json
import sys

import litellm

import decimal, email.message, sqlite3, xml.dom.minidom  # unrelated imports

print("IMPORTS DONE", file=sys.stderr, flush=True)

import litellm_oauth2

messages = [{"role": "user", "content": "hello"}]
calls = {
    "completion": lambda: litellm.completion(model="demo_provider/chat-model", messages=messages),
    "streaming": lambda: list(litellm.completion(model="demo_provider/chat-model", messages=messages, stream=True)),
    "embedding": lambda: litellm.embedding(model="demo_provider/embedding-model", input=["x"]),
    "acompletion": lambda: asyncio.run(litellm.acompletion(model="demo_provider/chat-model", messages=messages)),
}
outcomes = {}
for name, call in calls.items():
    try:
        call()
        outcomes[name] = None
    except litellm_oauth2.OAuth2ConfigurationError as exc:
        found = litellm_oauth2.find_oauth2_error(exc)
        outcomes[name] = {
            "type": type(exc).__name__,
            "message": str(exc),
            "provider": exc.provider,
            "found": type(found).__name__,
            "found_is_configuration_error": isinstance(found, litellm_oauth2.OAuth2ConfigurationError),
            "also_provider_error": isinstance(exc, litellm_oauth2.OAuth2ProviderError),
            "also_litellm_error": isinstance(exc, litellm.AuthenticationError),
        }
    except Exception as exc:
        outcomes[name] = {"type": type(exc).__name__, "message": str(exc), "uncaught": True}
other = litellm.completion(model="openai/unrelated", messages=messages, mock_response="unaffected")
print("RESULT " + json.dumps({"calls": outcomes, "other": other.choices[0].message.content}))
"""

ENABLE_SCRIPT = """
import json

{before}
import litellm
import litellm_oauth2
{after}
again = litellm_oauth2.enable()
reply = litellm.completion(model="demo_provider/chat-model", messages=[{{"role": "user", "content": "hello"}}])
print("RESULT " + json.dumps({{
    "same_handler": handler is again is litellm_oauth2.proxy_handler,
    "in_callbacks": sum(callback is handler for callback in litellm.callbacks),
    "handlers": sum(isinstance(callback, litellm_oauth2.OAuth2Handler) for callback in litellm.callbacks),
    "registrations": [entry["provider"] for entry in litellm.custom_provider_map],
    "completion": reply.choices[0].message.content,
}}))
"""

# Interpreter start only: which of our modules (and LiteLLM's) are loaded, and is the hook armed.
MODULES_SCRIPT = """
import json, sys
print("RESULT " + json.dumps({
    "modules": sorted(name for name in sys.modules if name.split(".")[0] in ("litellm", "litellm_oauth2", "openai", "pydantic")),
    "finders": [type(finder).__name__ for finder in sys.meta_path],
}))
"""


@dataclass
class Gateway:
    tokens: TokenServer
    upstream: OpenAIUpstream
    directory: Path

    def write_config(self, *, yaml: bool = False, **overrides: Any) -> Path:
        settings: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "token_url": self.tokens.token_url,
            "api_base": self.upstream.base_url,
        }
        settings.update(overrides)
        document = {"oauth2_providers": {PROVIDER: {k: v for k, v in settings.items() if v is not None}}}
        if yaml:
            path = self.directory / "litellm_config.yaml"
            path.write_text(yaml_module.safe_dump(document, default_flow_style=False))
        else:
            path = self.directory / "litellm_config.json"
            path.write_text(json.dumps(document, indent=2))
        return path


@dataclass
class Run:
    result: dict[str, Any]
    stdout: str
    stderr: str


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with TokenServer() as tokens, OpenAIUpstream(tokens) as upstream:
        tokens.add_client(CLIENT_ID, CLIENT_SECRET)
        yield Gateway(tokens, upstream, tmp_path)


def run_script(source: str, cwd: Path, *, timeout: float = SUBPROCESS_TIMEOUT, **env_vars: str) -> Run:
    """Run ``source`` in a fresh interpreter with only the given LITELLM_OAUTH2_* variables set."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LITELLM_OAUTH2_")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1", **env_vars)
    script = cwd / "app.py"
    script.write_text(textwrap.dedent(source))
    completed = subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert completed.returncode == 0 and len(lines) == 1, (
        f"script failed (exit {completed.returncode})\nstdout:\n{completed.stdout[-3000:]}\n"
        f"stderr:\n{completed.stderr[-3000:]}"
    )
    return Run(json.loads(lines[0].removeprefix(RESULT_PREFIX)), completed.stdout, completed.stderr)


def assert_valid_bearer_on_every_request(gateway: Gateway) -> None:
    assert gateway.upstream.requests > 0
    for request in gateway.upstream.recorded:
        authorization = request.headers.get("authorization", "")
        assert authorization.startswith("Bearer ")
        claims = gateway.tokens.verify_access_token(authorization.removeprefix("Bearer "))
        assert claims is not None and claims["sub"] == CLIENT_ID


def test_env_var_alone_authenticates_an_unchanged_script(gateway: Gateway) -> None:
    config = gateway.write_config()

    run = run_script(UNCHANGED_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config))

    assert run.result == {
        "completion": EXPECTED_CONTENT,
        "streaming": EXPECTED_CONTENT,
        "embedding": [8, 8],
        "acompletion": EXPECTED_CONTENT,
        "astreaming": EXPECTED_CONTENT,
    }
    paths = sorted(request.path for request in gateway.upstream.recorded)
    assert paths == ["/v1/chat/completions"] * 4 + ["/v1/embeddings"]
    assert_valid_bearer_on_every_request(gateway)
    assert gateway.tokens.token_requests == 1  # one token, cached across sync and async calls
    assert CLIENT_SECRET not in run.stdout + run.stderr


def test_disable_env_var_switches_the_plugin_off(gateway: Gateway) -> None:
    config = gateway.write_config()

    run = run_script(
        SINGLE_CALL_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config), LITELLM_OAUTH2_DISABLE="1"
    )

    assert run.result["raised"] is not None
    assert "LLM Provider NOT provided" in run.result["message"]
    assert gateway.tokens.token_requests == 0
    assert gateway.upstream.requests == 0


@pytest.mark.parametrize("yaml", [False, True], ids=["json", "yaml"])
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"scopes": "llm.invoke"}, "scopes", id="unknown-field-typo"),
        pytest.param({"client_secret": None}, "client_secret", id="missing-client-secret"),
    ],
)
def test_broken_config_is_logged_at_import_and_raised_at_each_call(
    gateway: Gateway, overrides: dict[str, Any], field: str, yaml: bool
) -> None:
    config = gateway.write_config(yaml=yaml, **overrides)

    run = run_script(BROKEN_CONFIG_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config))

    # Logged once, while `import litellm` ran: before the script's marker, naming provider and field.
    logged_at_import, _, after_imports = run.stderr.partition("IMPORTS DONE")
    assert after_imports, run.stderr
    assert "litellm-oauth2 not enabled" in logged_at_import
    assert f"'{PROVIDER}'" in logged_at_import and f"'{field}'" in logged_at_import
    assert "litellm-oauth2 not enabled" not in after_imports
    # Every kind of call fails with what `except OAuth2ConfigurationError` catches.
    calls = run.result["calls"]
    assert set(calls) == {"completion", "streaming", "embedding", "acompletion"}
    for name, outcome in calls.items():
        assert outcome is not None, f"{name} succeeded despite the broken configuration"
        assert "uncaught" not in outcome, f"{name} raised {outcome['type']}: {outcome['message']}"
        assert outcome["provider"] == PROVIDER
        assert f"'{PROVIDER}'" in outcome["message"] and f"'{field}'" in outcome["message"]
        assert outcome["found_is_configuration_error"], outcome
        assert outcome["also_provider_error"] and outcome["also_litellm_error"], outcome
    assert run.result["other"] == "unaffected"
    assert gateway.tokens.token_requests == 0
    assert gateway.upstream.requests == 0
    assert CLIENT_SECRET not in run.stdout + run.stderr


def test_nothing_is_loaded_at_start_without_the_env_var(tmp_path: Path) -> None:
    run = run_script(MODULES_SCRIPT, tmp_path)

    assert run.result["modules"] == []
    assert "_AfterLiteLLMImport" not in run.result["finders"]


def test_env_var_arms_the_hook_without_importing_litellm(gateway: Gateway) -> None:
    config = gateway.write_config()

    run = run_script(MODULES_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config))

    # The .pth ran (so the test is not vacuous), but nothing heavy came with it.
    modules = run.result["modules"]
    assert "litellm_oauth2.autoload" in modules
    assert not [name for name in modules if name.split(".")[0] in ("litellm", "openai", "pydantic")]
    assert "litellm_oauth2.handler" not in modules and "litellm_oauth2.config" not in modules
    assert run.result["finders"].count("_AfterLiteLLMImport") == 1
    assert gateway.tokens.token_requests == 0


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_disable_env_var_leaves_the_import_system_alone(gateway: Gateway, value: str) -> None:
    config = gateway.write_config()

    run = run_script(
        MODULES_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config), LITELLM_OAUTH2_DISABLE=value
    )

    assert "litellm" not in run.result["modules"]
    assert "_AfterLiteLLMImport" not in run.result["finders"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param("", "handler = litellm_oauth2.enable()", id="enable-after-import-litellm"),
        # enable() imports LiteLLM itself, from inside litellm_oauth2.handler, while the hook is armed.
        pytest.param(
            "import litellm_oauth2\nhandler = litellm_oauth2.enable()", "", id="enable-before-import-litellm"
        ),
        # The error classes' module imports LiteLLM first; activation must wait for all of them.
        pytest.param(
            "from litellm_oauth2 import OAuth2ProviderError\nimport litellm_oauth2\nhandler = litellm_oauth2.enable()",
            "",
            id="error-classes-before-import-litellm",
        ),
    ],
)
def test_enable_plus_env_var_registers_the_handler_once(gateway: Gateway, before: str, after: str) -> None:
    config = gateway.write_config()

    run = run_script(
        ENABLE_SCRIPT.format(before=before, after=after), gateway.directory, LITELLM_OAUTH2_CONFIG=str(config)
    )

    assert run.result == {
        "same_handler": True,
        "in_callbacks": 1,
        "handlers": 1,
        "registrations": [PROVIDER],
        "completion": EXPECTED_CONTENT,
    }
    assert gateway.tokens.token_requests == 1
    assert_valid_bearer_on_every_request(gateway)


IMPORT_ONLY_SCRIPT = """
import json

import litellm

print("RESULT " + json.dumps({"imported": litellm.__name__}))
"""
# Bounded: a configuration that cannot be read must not hold `import litellm`.
IMPORT_TIMEOUT = 60.0


def test_a_config_that_never_ends_is_refused_at_once(tmp_path: Path) -> None:
    run = run_script(IMPORT_ONLY_SCRIPT, tmp_path, timeout=IMPORT_TIMEOUT, LITELLM_OAUTH2_CONFIG="/dev/zero")

    assert run.result == {"imported": "litellm"}
    assert "litellm-oauth2 not enabled" in run.stderr and "not a regular file" in run.stderr, run.stderr


def test_a_fifo_as_config_does_not_block_the_import(tmp_path: Path) -> None:
    fifo = tmp_path / "litellm_config.json"
    os.mkfifo(fifo)

    run = run_script(IMPORT_ONLY_SCRIPT, tmp_path, timeout=IMPORT_TIMEOUT, LITELLM_OAUTH2_CONFIG=str(fifo))

    assert run.result == {"imported": "litellm"}
    assert "litellm-oauth2 not enabled" in run.stderr and "not a regular file" in run.stderr, run.stderr


def test_a_handler_check_failing_after_validation_is_raised_at_each_call(gateway: Gateway) -> None:
    config = gateway.write_config(api_base=None)

    run = run_script(BROKEN_CONFIG_SCRIPT, gateway.directory, LITELLM_OAUTH2_CONFIG=str(config))

    for name, outcome in run.result["calls"].items():
        assert outcome is not None and "uncaught" not in outcome, (name, outcome)
        assert outcome["provider"] == PROVIDER and "'api_base'" in outcome["message"], outcome
    assert gateway.upstream.requests == 0


def test_the_litellm_facing_modules_do_not_import_autoload_back() -> None:
    import litellm_oauth2.autoload as autoload

    package = Path(autoload.__file__).parent
    for name in ("handler", "provider", "_doors", "_compat", "_bearer", "_styles"):
        assert "autoload" not in (package / f"{name}.py").read_text(), name
    assert "_initializing" not in Path(autoload.__file__).read_text()


@pytest.mark.parametrize(
    ("content", "logged"),
    [
        pytest.param(None, "not found", id="wrong-path"),
        pytest.param('{"oauth2_providers": {', "invalid JSON", id="invalid-json"),
    ],
)
def test_a_config_naming_no_provider_is_logged_at_import(
    tmp_path: Path, content: str | None, logged: str
) -> None:
    config = tmp_path / "litellm_config.json"
    if content is not None:
        config.write_text(content)

    run = run_script(IMPORT_ONLY_SCRIPT, tmp_path, timeout=IMPORT_TIMEOUT, LITELLM_OAUTH2_CONFIG=str(config))

    # No provider can be named, so no call can be answered for it: the log is the only trace.
    assert run.result == {"imported": "litellm"}
    assert "litellm-oauth2 not enabled" in run.stderr and logged in run.stderr, run.stderr
