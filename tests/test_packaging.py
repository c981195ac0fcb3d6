"""What a plain install gives a newcomer, and what the README's test extra installs.

A plain ``pip install`` brings LiteLLM, pydantic, requests and tenacity, not PyJWT or
cryptography. The subprocesses below refuse those two imports, so they run as on such a machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Installed by the `jwt` and `redis` extras only.
BLOCKED = ("jwt", "cryptography")
BLOCKER = f"""
import sys

class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _Refuse())
"""


def run_plain(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that cannot import PyJWT or cryptography."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_testing_servers_work_without_the_jwt_extra(tmp_path: Path) -> None:
    code = """
import json, urllib.request
from litellm_oauth2.testing import OpenAIUpstream, TokenServer

with TokenServer(key_type="HS256") as tokens, OpenAIUpstream(tokens) as gateway:
    tokens.add_client("app", "pw")
    form = urllib.request.Request(
        tokens.token_url, data=b"grant_type=client_credentials&client_id=app&client_secret=pw"
    )
    token = json.load(urllib.request.urlopen(form, timeout=10))["access_token"]
    assert tokens.verify_access_token(token)["sub"] == "app"
    models = urllib.request.Request(gateway.base_url + "/models", headers={"Authorization": "Bearer " + token})
    assert urllib.request.urlopen(models, timeout=10).status == 200
    assert gateway.authorized_requests == 1 and tokens.jwks_url
try:
    TokenServer()
except ImportError as exc:
    print("refused:", exc)
"""
    result = run_plain(code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "refused:" in result.stdout and "pip install PyJWT cryptography" in result.stdout
    assert "key_type='HS256'" in result.stdout


def test_demo_runs_without_the_jwt_extra_and_shows_its_config(tmp_path: Path) -> None:
    result = run_plain("from litellm_oauth2.cli import main; sys.exit(main(['demo']))", tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "All steps passed" in result.stdout
    shown_text = result.stdout.split("litellm_config.json used", 1)[1].split("\n", 1)[1].split("\n2. ", 1)[0]
    shown = json.loads(shown_text)
    provider = shown["oauth2_providers"]["demo_provider"]
    assert provider["client_secret"] == "os.environ/DEMO_CLIENT_SECRET"
    assert provider["token_url"].startswith("http://127.0.0.1:") and provider["api_base"]
    assert "demo-secret" not in result.stdout + result.stderr


def _requirements(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names an extra installs, following ``litellm-oauth2[...]`` references."""
    names: set[str] = set()
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()
        if name == "litellm-oauth2":
            for inner in re.findall(r"\w+", requirement.split("[", 1)[1].split("]", 1)[0]):
                if inner not in seen:
                    names |= _requirements(inner, seen | {extra})
        else:
            names.add(name)
    return names


def test_the_test_extra_installs_what_the_suite_and_the_benchmarks_import() -> None:
    """The README's ``pip install -e '.[test]'`` is all ``pytest`` and ``benchmarks --quick`` need."""
    test = _requirements("test")
    for extra in ("jwt", "redis", "proxy", "bench"):
        assert _requirements(extra) <= test, extra
    assert {"pytest", "pytest-timeout", "hypothesis", "authlib", "httpx-auth", "build", "pyyaml"} <= test


def test_ci_installs_only_what_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup, tests = re.findall(r"^```bash\n(.*?)\n```", readme, re.MULTILINE | re.DOTALL)[:2]
    assert setup in ci and tests in ci
    assert ci.index(setup) < ci.index(tests) < ci.index("ruff check")
    # ... in a fresh clone of what is committed, as a newcomer starts: no .venv, no leftovers.
    assert ci.index('git clone --quiet . "$work/clone"') < ci.index('cd "$work/clone"') < ci.index(setup)
    editable = re.findall(r"pip install (?:--?[\w-]+ )*-e (\S+)", ci)
    assert editable and set(editable) == {"'.[test]'"}, editable


def test_ci_tests_the_oldest_litellm_the_package_accepts() -> None:
    (floor,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("litellm>=")]
    (oldest,) = re.findall(r"^OLDEST_LITELLM=(\S+)", (ROOT / ".ci" / "run").read_text(), re.MULTILINE)
    assert floor.split("#")[0].strip() == f"litellm>={oldest}"
    assert f"litellm {oldest}" in (ROOT / "README.md").read_text().lower()
