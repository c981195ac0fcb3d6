"""Run the suite: ``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json PATH]``.

Markdown goes to stdout, progress to stderr, and everything measured to the JSON file
(``benchmarks/results/latest.json`` by default). No goal is asserted: the exit status is
non-zero only when a benchmark could not run, or when a secret would have been written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
BENCHMARKS = ["warm", "stampede", "e2e", "refresh", "startup", "processes", "proxy", "memory"]
PACKAGES = [
    "litellm-oauth2",
    "litellm",
    "httpx-auth",
    "Authlib",
    "httpx",
    "httpx2",
    "requests",
    "openai",
    "redis",
]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def _load() -> str:
    try:
        return " / ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpus": cpus,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "packages": versions,
        "load_average_start": _load(),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke test, under a minute")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--json", type=Path, default=RESULTS, help=f"where to write the results (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    args.selected = [name.strip() for name in args.only.split(",") if name.strip()] or BENCHMARKS
    unknown = sorted(set(args.selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if os.environ.get("LITELLM_OAUTH2_CONFIG"):
        print(
            "unset LITELLM_OAUTH2_CONFIG first: the plugin would be switched on for this process too",
            file=sys.stderr,
        )
        return 2
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # LiteLLM must not fetch its cost map
    started = time.monotonic()
    info = machine()
    captured = io.StringIO()  # whatever LiteLLM or a peer prints: checked for secrets, then shown on stderr
    with contextlib.redirect_stdout(captured):
        results, failures, issued = _run(args, info)
    results["wall_time_s"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_end"] = _load()

    from . import peers, report

    text = report.markdown(results)
    data = report.dumps(results)
    secrets = {"client secret": peers.SECRET, "static API key": peers.STATIC_API_KEY}
    secrets.update({f"issued token {i}": token for i, token in enumerate(issued)})
    report.assert_no_secrets({"stdout": text + captured.getvalue(), "JSON": data}, secrets)
    if captured.getvalue():
        sys.stderr.write(captured.getvalue())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(data)
    print(text)
    print(f"results written to {args.json}; wall time {results['wall_time_s']:.0f} s", file=sys.stderr)
    for name in failures:
        print(f"benchmark {name} failed (see the JSON file)", file=sys.stderr)
    return 1 if failures else 0


def _run(args: argparse.Namespace, info: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    from . import (
        bench_e2e,
        bench_memory,
        bench_processes,
        bench_proxy,
        bench_refresh,
        bench_stampede,
        bench_startup,
        bench_warm,
    )
    from .context import Context
    from .peers import STATIC_API_KEY
    from .servers import Servers

    runners: dict[str, tuple[str, Callable[[Context], dict[str, Any]]]] = {
        "warm": ("warm_path", bench_warm.run),
        "stampede": ("stampede", bench_stampede.run),
        "e2e": ("end_to_end", bench_e2e.run),
        "refresh": ("refresh_under_load", bench_refresh.run),
        "startup": ("startup", bench_startup.run),
        "processes": ("many_processes", bench_processes.run),
        "proxy": ("proxy_under_load", bench_proxy.run),
        "memory": ("memory_and_handles", bench_memory.run),
    }
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    if args.selected != BENCHMARKS:
        command += f" --only {','.join(args.selected)}"
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "command": command,
        "machine": info,
        "benchmarks": {},
    }
    failures: list[str] = []
    with Servers(STATIC_API_KEY) as servers:
        ctx = Context(servers, quick=args.quick)
        if "e2e" in args.selected or "warm" in args.selected or "stampede" in args.selected:
            ctx.log("importing litellm")
            import litellm  # noqa: F401 - once, up front, so no benchmark pays for it

        for name in args.selected:
            key, run = runners[name]
            began = time.monotonic()
            try:
                section = run(ctx)
            except Exception as exc:
                failures.append(name)
                where = traceback.extract_tb(exc.__traceback__)[-1]
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                detail += f" (at {Path(where.filename).name}:{where.lineno})"
                section = {"error": detail}
                ctx.log(f"{name} failed: {detail}")
            section["duration_s"] = round(time.monotonic() - began, 1)
            results["benchmarks"][key] = section
        issued = servers.issued_tokens()
    return results, failures, issued
