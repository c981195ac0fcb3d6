"""The command line against the loopback servers: check, token, demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from helpers import SECRET, provider_dict
from redis_server import RedisServer, free_port

from litellm_oauth2.cli import main
from litellm_oauth2.testing import OpenAIUpstream, TokenServer


@pytest.fixture
def servers() -> Iterator[tuple[TokenServer, OpenAIUpstream]]:
    with TokenServer() as tokens, OpenAIUpstream(tokens) as gateway:
        tokens.add_client("test-client", SECRET)
        tokens.add_client("other-client", "other-secret", allowed_scopes={"llm.chat"})
        yield tokens, gateway


def write_config(path: Path, providers: dict[str, Any]) -> str:
    file = path / "litellm_config.json"
    file.write_text(json.dumps({"oauth2_providers": providers}))
    return str(file)


def good_providers(tokens: TokenServer, gateway: OpenAIUpstream) -> dict[str, Any]:
    return {
        "alpha": provider_dict(tokens.token_url, api_base=gateway.base_url),
        "beta": provider_dict(
            tokens.token_url,
            client_id="other-client",
            client_secret="other-secret",
            scope="llm.chat",
            api_base=gateway.base_url,
        ),
    }


def test_check_good_config(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    config = write_config(tmp_path, good_providers(tokens, gateway))
    assert main(["check", "--config", config]) == 0
    out = capsys.readouterr().out
    table, cache = out.split("\n\n")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["provider", "token", "endpoint"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"alpha", "beta"}
    assert cache.startswith("cache: memory") and "ok" in cache
    assert " ok " in rows["alpha"] and "client_secret_basic" in rows["alpha"] and "200" in rows["alpha"]
    assert "llm.chat" in rows["beta"]
    assert tokens.token_requests == 2 and gateway.authorized_requests == 2
    assert SECRET not in out and not any(token in out for token in tokens.issued_tokens)


def test_check_reports_the_failing_provider(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    providers = good_providers(tokens, gateway)
    providers["beta"]["client_secret"] = "wrong-secret"
    config = write_config(tmp_path, providers)
    assert main(["check", "--config", config]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.split("\n\n")[0].splitlines()[2:]}
    assert "invalid_client" in rows["beta"] and " ok " in rows["alpha"]
    assert "wrong-secret" not in out


def test_check_json_and_provider_filter(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    config = write_config(tmp_path, good_providers(tokens, gateway))
    assert main(["check", "--config", config, "--json", "--provider", "beta"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ok"] is True
    assert [row["provider"] for row in report["providers"]] == ["beta"]
    assert report["providers"][0]["granted_scope"] == "llm.chat"
    assert 3500 < report["providers"][0]["expires_in"] <= 3600
    assert "other-secret" not in out and not any(token in out for token in tokens.issued_tokens)


def test_check_flags_a_gateway_that_refuses_the_token(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    config = write_config(tmp_path, {"alpha": good_providers(tokens, gateway)["alpha"]})
    gateway.fail_next(1, 401)
    assert main(["check", "--config", config]) == 1
    assert "401" in capsys.readouterr().out


def test_check_broken_config_lists_every_problem_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, {"alpha": {"client_id": "x", "scopes": "a", "token_url": "https://idp/t"}}
    )
    assert main(["check", "--config", config]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    first, *problems = captured.err.splitlines()
    assert first.endswith("litellm_config.json: 2 problems:")
    assert problems[0] == "  provider 'alpha': unknown field 'scopes'; did you mean 'scope'?"
    assert problems[1].startswith("  provider 'alpha': field 'client_secret' is required")


def test_check_broken_config_with_one_problem_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path,
        {"alpha": {"client_id": "x", "client_secret": "y", "scopes": "a", "token_url": "https://idp/t"}},
    )
    assert main(["check", "--config", config]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'scope'" in err


def test_token_prints_a_token_the_gateway_accepts(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    config = write_config(tmp_path, good_providers(tokens, gateway))
    assert main(["token", "alpha", "--config", config]) == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert captured.out == token + "\n" and captured.err == ""
    response = requests.get(
        f"{gateway.base_url}/models", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert response.status_code == 200


def test_token_errors_go_to_stderr(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens, gateway = servers
    config = write_config(tmp_path, good_providers(tokens, gateway))
    assert main(["token", "nope", "--config", config]) == 2
    tokens.fail_next(1, status=401, error="invalid_client")
    assert main(["token", "alpha", "--config", config]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown OAuth2 provider 'nope'" in captured.err and "invalid_client" in captured.err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["check", "--help"], ["token", "--help"], ["demo", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "litellm-oauth2 0." in out


def test_demo_runs_end_to_end() -> None:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LITELLM_OAUTH2_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-m", "litellm_oauth2", "demo"], capture_output=True, text=True, env=env, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "token fetched once (token requests: 1" in result.stdout
    assert "refreshed ahead of expiry" in result.stdout and "no call waited" in result.stdout
    assert "gateway answered 401 once" in result.stdout
    assert "0 without a valid token" in result.stdout
    assert "demo-secret" not in result.stdout + result.stderr


# The CLI's own runner, reporting at exit whether anything imported LiteLLM.
_REPORTS_LITELLM = """
import atexit, sys
atexit.register(lambda: print("litellm imported:", "litellm" in sys.modules, file=sys.stderr))
from litellm_oauth2.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _without_litellm(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "LITELLM_OAUTH2_CONFIG"}
    env.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)  # a LiteLLM import would show its offline warning
    return subprocess.run(
        [sys.executable, "-c", _REPORTS_LITELLM, *argv], capture_output=True, text=True, env=env, timeout=120
    )


def test_check_and_token_never_import_litellm(
    servers: tuple[TokenServer, OpenAIUpstream], tmp_path: Path
) -> None:
    tokens, gateway = servers
    good = write_config(tmp_path, good_providers(tokens, gateway))
    (tmp_path / "bad").mkdir()
    bad = write_config(
        tmp_path / "bad",
        {
            "alpha": good_providers(tokens, gateway)["alpha"],
            "beta": {"client_id": "x", "token_url": "ftp://x"},
        },
    )
    runs = {
        "check (config error)": (_without_litellm("check", "--config", bad), 2),
        "check": (_without_litellm("check", "--config", good), 0),
        "token": (_without_litellm("token", "alpha", "--config", good), 0),
    }
    for name, (result, code) in runs.items():
        assert result.returncode == code, f"{name}: {result.stderr}"
        assert result.stderr.strip().endswith("litellm imported: False"), f"{name}: {result.stderr}"
        assert "cost map" not in result.stderr


def test_load_config_never_imports_litellm(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "alpha": {"client_id": "x", "client_secret": "y", "token_url": "https://idp.example/t"},
            "openai": {"client_id": "x", "client_secret": "y", "token_url": "https://idp.example/t"},
            "beta": {"client_id": "x", "token_url": "ftp://x"},
        },
    )
    script = (
        "import sys\n"
        "from litellm_oauth2.config import load_config\n"
        "from litellm_oauth2.errors import OAuth2ConfigurationError\n"
        "try:\n"
        "    load_config(sys.argv[1])\n"
        "except OAuth2ConfigurationError as exc:\n"
        "    print(type(exc).__name__)\n"
        "print('litellm imported:', 'litellm' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, config], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines()[-1] == "litellm imported: False", result.stdout + result.stderr


# -- the cache ----------------------------------------------------------------------------------

PREFIX = "team_a:"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def redis_config(path: Path, tokens: TokenServer, gateway: OpenAIUpstream, url: str) -> str:
    file = path / "litellm_config.json"
    cache = {"type": "redis", "url": url, "key_prefix": PREFIX}
    file.write_text(json.dumps({"oauth2_providers": good_providers(tokens, gateway), "cache": cache}))
    return str(file)


def checker_url(port: int, password: str = SECRET) -> str:
    return f"redis://checker:{quote(password, safe='')}@127.0.0.1:{port}/0"


def assert_no_secret(text: str) -> None:
    assert SECRET not in text and quote(SECRET, safe="") not in text and "other-secret" not in text


def test_check_writes_and_reads_back_under_the_key_prefix(
    servers: tuple[TokenServer, OpenAIUpstream],
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens, gateway = servers
    admin = redis_server.client()
    # A user that may touch only keys under the configured prefix: a write elsewhere is refused.
    admin.acl_setuser(
        "checker",
        enabled=True,
        reset_passwords=True,
        passwords=[f"+{SECRET}"],
        keys=[f"{PREFIX}*"],
        commands=["+@all"],
    )
    admin.config_resetstat()
    config = redis_config(tmp_path, tokens, gateway, checker_url(redis_server.port))
    assert main(["check", "--config", config, "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ok"] is True and report["cache"]["ok"] is True, report["cache"]
    assert report["cache"]["type"] == "redis"
    stats = admin.info("commandstats")
    assert all(stats.get(f"cmdstat_{name}", {}).get("calls") == 1 for name in ("set", "get", "del")), stats
    assert admin.keys("*") == []  # the probe key is gone
    assert f"127.0.0.1:{redis_server.port}" in out
    assert_no_secret(out)


def test_check_fails_on_a_refused_password_without_showing_it(
    servers: tuple[TokenServer, OpenAIUpstream],
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens, gateway = servers
    admin = redis_server.client()
    admin.acl_setuser(
        "checker",
        enabled=True,
        reset_passwords=True,
        passwords=["+another-password"],
        keys=[f"{PREFIX}*"],
        commands=["+@all"],
    )
    config = redis_config(tmp_path, tokens, gateway, checker_url(redis_server.port))
    assert main(["check", "--config", config]) == 1
    captured = capsys.readouterr()
    cache = captured.out.split("\n\n")[1]
    assert cache.startswith("cache: redis") and "FAILED" in cache and "Authentication" in cache, cache
    assert f"redis://checker:***@127.0.0.1:{redis_server.port}/0" in cache
    assert_no_secret(captured.out + captured.err)


@pytest.mark.parametrize("password_in", ["user info", "query"])
def test_check_fails_when_redis_is_unreachable(
    servers: tuple[TokenServer, OpenAIUpstream],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    password_in: str,
) -> None:
    tokens, gateway = servers
    port = free_port()
    url = checker_url(port)
    if password_in == "query":
        url = f"redis://127.0.0.1:{port}/0?password={quote(SECRET, safe='')}&socket_keepalive=true"
    config = redis_config(tmp_path, tokens, gateway, url)
    assert main(["check", "--config", config, "--json"]) == 1
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["ok"] is False and report["cache"]["ok"] is False
    assert all(row["ok"] for row in report["providers"])  # the providers themselves are fine
    assert "unreachable" in report["cache"]["result"], report["cache"]
    assert f"127.0.0.1:{port}" in report["cache"]["location"] and "***" in report["cache"]["location"]
    assert_no_secret(out)


_BLOCKS_REDIS = """
import sys
class _NoRedis:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "redis":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoRedis())
from litellm_oauth2.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_check_fails_when_the_redis_extra_is_missing(
    servers: tuple[TokenServer, OpenAIUpstream], redis_server: RedisServer, tmp_path: Path
) -> None:
    tokens, gateway = servers
    config = redis_config(tmp_path, tokens, gateway, checker_url(redis_server.port))
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKS_REDIS, "check", "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip install redis cryptography" in result.stdout, result.stdout + result.stderr
    assert_no_secret(result.stdout + result.stderr)
