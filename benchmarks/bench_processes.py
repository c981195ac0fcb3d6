"""6. Many processes: 8 worker processes share one client id; token requests with and without Redis.

Needs ``litellm_oauth2/redis_store.py`` (the shared cache) and a ``redis-server`` binary; without
either the benchmark reports itself skipped, with the reason. Each variant starts 8 fresh
processes ('spawn'); each builds its own ``TokenCache`` from the same configuration (in-memory
cache, or ``"cache": {"type": "redis", ...}`` on a private ``redis-server``), fetches its first
token, then calls ``get_token`` every ``THINK`` seconds over the measured lifetimes. Reported:
token requests the token server received during the measured interval, per lifetime, and the
cold-start requests (before it).
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from . import peers
from ._worker import token_worker
from .context import Context
from .stats import rotated, summary

PROCESSES = 8
LIFETIME = 2.0
MARGIN = LIFETIME / 4
THINK = 0.01
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _RedisServer:
    def __init__(self, binary: str) -> None:
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="litellm-oauth2-bench-redis-")
        self._process = subprocess.Popen(  # noqa: S603 - the redis-server found on PATH, fixed arguments
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self) -> None:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                client.close()
                return
            except redis.RedisError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        self._dir.cleanup()


def skip_reason() -> str | None:
    if not (REPO / "litellm_oauth2" / "redis_store.py").exists():
        return "litellm_oauth2/redis_store.py is not there (the shared Redis cache has not landed)"
    if shutil.which("redis-server") is None:
        return "no redis-server on PATH (apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install 'litellm-oauth2[redis]')"
    return None


def _variant(ctx: Context, name: str, cache: dict[str, Any], lifetimes: int) -> dict[str, Any]:
    from litellm_oauth2.config import OAuth2Config

    client_id = ctx.client_id(f"processes-{name}")
    ctx.servers.set_lifetime(client_id, LIFETIME)
    settings = {
        "client_id": client_id,
        "client_secret": peers.SECRET,
        "token_url": ctx.servers.token_url,
        "expiry_buffer_seconds": MARGIN,
        "timeout_seconds": 30,
        "retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0},
    }
    config = OAuth2Config.from_dict({"oauth2_providers": {peers.PROVIDER: settings}, "cache": cache})
    spawn = multiprocessing.get_context("forkserver")
    # Fork from a clean single-threaded server that has the token cache imported: each worker is
    # a fresh process (its own memory, its own TokenCache) that starts in milliseconds.
    spawn.set_forkserver_preload(["benchmarks._worker", "litellm_oauth2.redis_store"])
    ready: Any = spawn.Queue()
    results: Any = spawn.Queue()
    start = spawn.Value("d", 0.0)
    duration = lifetimes * LIFETIME
    workers = [
        spawn.Process(
            target=token_worker,
            args=(config, peers.PROVIDER, start, duration, THINK, ready, results),
            name=f"bench-{name}-{i}",
            daemon=True,
        )
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.get(timeout=120)  # every process has its first token (or failed)
    ctx.log(f"  {name}: {PROCESSES} processes ready")
    start_at = time.monotonic() + 0.2
    end_at = start_at + duration
    start.value = start_at
    reports = [results.get(timeout=duration + 60) for _ in workers]
    ctx.log(f"  {name}: results in")
    for worker in workers:
        worker.join(30)
    ctx.log(f"  {name}: joined")
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        raise RuntimeError(f"{name}: worker processes failed: {errors}")
    stamps = ctx.servers.stamps(client_id)
    measured = [at for at in stamps if start_at <= at < end_at]
    return {
        "token_requests_measured": len(measured),
        "token_requests_per_lifetime": round(len(measured) / lifetimes, 2),
        "cold_start_token_requests": sum(1 for at in stamps if at < start_at),
        "calls": sum(r["calls"] for r in reports),
        "failed_calls": sum(r["failures"] for r in reports),
        "slowest_call_ms": summary([r["slowest_s"] for r in reports], 1000.0, 2),
    }


def run(ctx: Context) -> dict[str, Any]:
    reason = skip_reason()
    if reason is not None:
        ctx.log(f"many processes: skipped: {reason}")
        return {"skipped": reason}
    lifetimes = 1 if ctx.quick else 5
    redis_server = _RedisServer(shutil.which("redis-server") or "redis-server")
    try:
        redis_server.wait_ready()
        variants = {
            "in-memory": {"type": "memory"},
            "redis": {"type": "redis", "url": redis_server.url},
        }
        ctx.log(
            f"many processes: {PROCESSES} processes, {lifetimes} lifetimes of {LIFETIME:g} s, memory vs Redis"
        )
        results = {
            name: _variant(ctx, name, variants[name], lifetimes) for name in rotated(list(variants), 0)
        }
    finally:
        redis_server.close()
    return {
        "processes": PROCESSES,
        "lifetimes": lifetimes,
        "lifetime_s": LIFETIME,
        "margin_s": MARGIN,
        "variants": results,
        "goals": {
            "shared_cache_fewer_requests": results["redis"]["token_requests_measured"]
            < results["in-memory"]["token_requests_measured"],
            "redis_cold_start_one_request": results["redis"]["cold_start_token_requests"] == 1,
        },
    }
