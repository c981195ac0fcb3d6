"""5. Start-up cost: what installing the package adds to every interpreter, and to ``import litellm``.

a) ``python -c pass``, package installed vs not installed, ``LITELLM_OAUTH2_CONFIG`` unset.
   "Installed" is the project's virtualenv, whose site-packages holds
   ``litellm_oauth2_autoload.pth`` (one line, run by ``site`` at every start-up). "Not
   installed" is a throw-away virtualenv on the same base interpreter whose site-packages holds
   a symbolic link to every entry of the project's site-packages except this package's own
   (its ``.pth`` files and ``dist-info``): the same interpreter and the same other ``.pth``
   files, only ours missing.
b) ``import litellm`` in the installed virtualenv, with ``LITELLM_OAUTH2_CONFIG`` pointing to
   a valid one-provider configuration vs unset. The child also times the plugin's own
   activation (the hook run after LiteLLM's module body) directly, which is the added cost
   without the run-to-run noise of a ~5 s import.

Runs alternate between the two variants (a b a b ...) and each figure is the median of the
wall-clock times measured around ``subprocess.run``. ``--quick`` runs ``import litellm`` once,
with the variable set only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from . import peers
from .context import Context
from .stats import median, ratio, summary

OUR_SITE_ENTRIES = ("litellm_oauth2_autoload.pth", "_editable_impl_litellm_oauth2.pth")

_CHILD = """
import json, sys, time
spent = []
autoload = sys.modules.get("litellm_oauth2.autoload")
if autoload is not None:
    original = autoload.activate
    def timed():
        t0 = time.perf_counter()
        original()
        spent.append(time.perf_counter() - t0)
    autoload.activate = timed
t0 = time.perf_counter()
import litellm
elapsed = time.perf_counter() - t0
names = [entry.get("provider") for entry in litellm.custom_provider_map]
print(json.dumps({"import_s": elapsed, "activate_s": sum(spent), "registered": "bench" in names}))
"""


def _ours(name: str) -> bool:
    return name in OUR_SITE_ENTRIES or (name.startswith("litellm_oauth2") and name.endswith(".dist-info"))


def _uninstalled_venv(root: Path) -> Path:
    """A virtualenv that sees every installed distribution except litellm-oauth2."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True, capture_output=True)  # noqa: S603
    python = root / "bin" / "python"
    ours_site = Path(sysconfig.get_paths()["purelib"])
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    found = subprocess.run([python, "-c", query], check=True, capture_output=True, text=True)  # noqa: S603
    their_site = Path(found.stdout.strip())
    for entry in ours_site.iterdir():
        if not _ours(entry.name):
            (their_site / entry.name).symlink_to(entry)
    return python


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("LITELLM_OAUTH2_CONFIG", "LITELLM_OAUTH2_DISABLE")
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env.update(extra)
    return env


def _timed(command: list[str], env: dict[str, str], cwd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    # Only ever this interpreter or the throw-away venv's, with our own fixed arguments.
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)  # noqa: S603
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {done.returncode}: {done.stderr[-500:]}")
    return elapsed, done.stdout


def run(ctx: Context) -> dict[str, Any]:
    pass_runs = 10 if ctx.quick else 40
    import_runs = 1 if ctx.quick else 2
    installed = sys.executable
    with tempfile.TemporaryDirectory(prefix="litellm-oauth2-bench-") as scratch:
        not_installed = str(_uninstalled_venv(Path(scratch) / "venv"))
        env = _clean_env()
        probe = "import importlib.util, sys; print(importlib.util.find_spec('litellm_oauth2') is not None)"
        seen = {
            "installed": _timed([installed, "-c", probe], env, scratch)[1].strip(),
            "not_installed": _timed([not_installed, "-c", probe], env, scratch)[1].strip(),
        }
        if seen != {"installed": "True", "not_installed": "False"}:
            raise RuntimeError(f"start-up benchmark set-up is wrong: package visible = {seen}")
        ctx.log(
            f"start-up: python -c pass x{pass_runs} per variant, import litellm x{import_runs} per variant"
        )
        for command in ([installed, "-c", "pass"], [not_installed, "-c", "pass"]):
            _timed(command, env, scratch)  # warm the page cache
        pass_times: dict[str, list[float]] = {"installed": [], "not_installed": []}
        for _ in range(pass_runs):
            pass_times["installed"].append(_timed([installed, "-c", "pass"], env, scratch)[0])
            pass_times["not_installed"].append(_timed([not_installed, "-c", "pass"], env, scratch)[0])

        config = Path(scratch) / "litellm_config.json"
        config.write_text(
            json.dumps(
                {
                    "oauth2_providers": {
                        peers.PROVIDER: {
                            "client_id": "startup-client",
                            "client_secret": peers.SECRET,
                            "token_url": ctx.servers.token_url,
                            "api_base": ctx.servers.api_base,
                        }
                    }
                }
            )
        )
        variants = {"env_unset": _clean_env(), "env_set": _clean_env(LITELLM_OAUTH2_CONFIG=str(config))}
        if ctx.quick:  # one ~5 s import is all the smoke test can afford: the activation is timed inside it
            del variants["env_unset"]
        wall: dict[str, list[float]] = {name: [] for name in variants}
        in_process: dict[str, list[float]] = {name: [] for name in variants}
        activate: list[float] = []
        registered: dict[str, bool] = {}
        for _ in range(import_runs):
            for name, variant_env in variants.items():
                elapsed, out = _timed([installed, "-c", _CHILD], variant_env, scratch)
                report = json.loads(out.strip().splitlines()[-1])
                wall[name].append(elapsed)
                in_process[name].append(report["import_s"])
                registered[name] = report["registered"]
                if name == "env_set":
                    activate.append(report["activate_s"])

    pass_installed, pass_not = median(pass_times["installed"]), median(pass_times["not_installed"])
    spread = [
        abs(a - b) for a, b in zip(pass_times["installed"][1:], pass_times["installed"][:-1], strict=False)
    ]
    if in_process.get("env_unset"):
        baseline = median(in_process["env_unset"])
        added_wall: float | None = round((median(wall["env_set"]) / median(wall["env_unset"]) - 1) * 100, 2)
    else:
        baseline = median(in_process["env_set"]) - median(activate)
        added_wall = None
    added_direct = median(activate) / baseline
    return {
        "python_c_pass_ms": {
            "installed_env_unset": summary(pass_times["installed"], 1000.0, 2),
            "not_installed": summary(pass_times["not_installed"], 1000.0, 2),
            "difference_of_medians_ms": round((pass_installed - pass_not) * 1000, 2),
            "run_to_run_noise_ms": round(median(spread) * 1000, 2) if spread else None,
            "ratio_installed_over_not": ratio(pass_installed, pass_not),
        },
        "import_litellm_s": {
            "env_unset_wall": summary(wall.get("env_unset", []), 1.0, 3),
            "env_set_wall": summary(wall["env_set"], 1.0, 3),
            "env_unset_in_process": summary(in_process.get("env_unset", []), 1.0, 3),
            "env_set_in_process": summary(in_process["env_set"], 1.0, 3),
            "activation_in_process": summary(activate, 1.0, 4),
            "added_by_env_wall_pct": added_wall,
            "added_by_activation_pct": round(added_direct * 100, 2),
            "provider_registered_when_set": registered.get("env_set", False),
            "provider_registered_when_unset": registered.get("env_unset", False),
        },
        "goals": {
            "unmeasurable_when_unset": abs(pass_installed - pass_not) <= (median(spread) if spread else 0.0),
            "under_5pct_when_set": added_direct < 0.05,
            "activates_only_when_set": registered.get("env_set", False)
            and not registered.get("env_unset", False),
        },
    }
