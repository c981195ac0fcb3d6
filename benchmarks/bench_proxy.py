"""7. The LiteLLM proxy under load: an OAuth2 provider beside the same gateway behind a static key.

The real proxy (``python -m litellm.proxy.proxy_cli``) runs in a process group of its own, once
with 1 worker (tokens in each worker's memory) and once with 4 workers sharing a Redis cache
(``redis-server`` on loopback). Its ``config.yaml`` activates the plugin the public way, one line
(``litellm_settings: callbacks: ["litellm_oauth2.proxy_handler"]``, the OAuth2 config named by
``$LITELLM_OAUTH2_CONFIG``), and lists two models on the same loopback gateway:

* ``oauth``: ``bench/test-model``, the plugin's provider (client credentials from the token server);
* ``static``: ``openai/test-model`` with ``api_base`` and the gateway's static ``api_key``.

The proxy's CPU time (all its processes, from ``/proc``) per request is recorded too: on a shared
machine wall-clock throughput moves with everyone else's load, while requests per CPU-second of
the proxy is what its throughput is when the proxy is the bottleneck.

This process drives it with ``CONCURRENCY`` requests in flight (httpx, one event loop), a fixed
count per stretch, alternating a chat completion and an SSE-streamed one (read to ``[DONE]``).
The two models take turns over ``ROUNDS`` rounds, order rotated; a stretch's throughput is
requests / wall time, and latency is from sending to the last byte. Ratios are ours/static, per
round (paired) and pooled.

Token requests, from the proxy's start (the workers' first tokens included) to the end: the token
server time-stamps them; those less than ``LIFETIME / 8`` apart are one renewal. One token request
per renewal, with 4 workers, means the workers shared each token, the first one included.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from . import peers
from .bench_processes import _free_port, _RedisServer
from .context import Context
from .stats import median, ratio, rotated, summary

MASTER_KEY = "sk-bench-proxy-master"
CONCURRENCY = 64
LIFETIME = 30.0
MARGIN = LIFETIME / 4
STARTUP_SECONDS = 240.0
REQUEST_SECONDS = 60.0
MODELS = {"litellm-oauth2": "oauth", "static key": "static"}


class _Proxy:
    """The LiteLLM proxy in its own process group, configured in a temporary directory."""

    def __init__(self, ctx: Context, client_id: str, workers: int, redis_url: str | None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="litellm-oauth2-bench-proxy-")
        directory = Path(self._dir.name)
        provider: dict[str, Any] = {
            "client_id": client_id,
            "client_secret": peers.SECRET,
            "token_url": ctx.servers.token_url,
            "api_base": ctx.servers.api_base,
            "expiry_buffer_seconds": MARGIN,
        }
        oauth2: dict[str, Any] = {"oauth2_providers": {peers.PROVIDER: provider}}
        if redis_url is not None:
            oauth2["cache"] = {"type": "redis", "url": redis_url}
        (directory / "litellm_config.json").write_text(json.dumps(oauth2))
        proxy_config = {
            "model_list": [
                {"model_name": "oauth", "litellm_params": {"model": f"{peers.PROVIDER}/test-model"}},
                {
                    "model_name": "static",
                    "litellm_params": {
                        "model": "openai/test-model",
                        "api_base": ctx.servers.api_base,
                        "api_key": peers.STATIC_API_KEY,
                    },
                },
            ],
            "litellm_settings": {"callbacks": ["litellm_oauth2.proxy_handler"]},
            "general_settings": {"master_key": MASTER_KEY},
        }
        config = directory / "proxy.json"  # JSON is YAML: no YAML writer needed
        config.write_text(json.dumps(proxy_config))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_OAUTH2_")}
        env.update(
            LITELLM_OAUTH2_CONFIG=str(directory / "litellm_config.json"),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_LOG="ERROR",
        )
        command = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(config)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--num_workers", str(workers)]
        self._log = directory / "proxy.log"
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                command,
                cwd=directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_live(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited with status {self.process.returncode}: {self.tail()}")
            try:
                if requests.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the proxy was not live after {STARTUP_SECONDS:.0f} s: {self.tail()}")

    def wait_idle(self) -> None:
        """Until the proxy's processes (its session) use under a fifth of a core: every worker has
        started (one answering the liveness probe says nothing of the others)."""
        ticks = os.sysconf("SC_CLK_TCK")
        previous = self.cpu_seconds(ticks)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            time.sleep(1.0)
            now = self.cpu_seconds(ticks)
            if now - previous < 0.2:
                return
            previous = now

    def cpu_seconds(self, ticks: int) -> float:
        """CPU time used so far by the proxy and its workers (those alive: workers are not recycled here)."""
        total = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) == self.process.pid:  # the session id: the proxy and its workers
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def tail(self) -> str:
        """The end of the proxy's output, for an error message (the config files hold the secrets, not this)."""
        return self._log.read_text(errors="replace")[-1500:]

    def output(self) -> str:
        return self._log.read_text(errors="replace")

    def close(self) -> None:
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 10.0)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=grace)
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self._dir.cleanup()


async def _drive(url: str, model: str, count: int) -> tuple[float, list[float], int]:
    """``count`` requests, ``CONCURRENCY`` in flight, chat and streamed chat alternating.

    Returns the wall time, each request's latency, and how many failed.
    """
    import httpx

    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    latencies: list[float] = []
    failures = 0
    issued = iter(range(count))

    async with httpx.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=REQUEST_SECONDS
    ) as client:

        async def one(index: int) -> bool:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "hello"}],
                "stream": index % 2 == 1,
            }
            if not body["stream"]:
                response = await client.post("/v1/chat/completions", json=body)
                return response.status_code == 200 and bool(
                    response.json()["choices"][0]["message"]["content"]
                )
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                done = False
                async for line in response.aiter_lines():
                    done = done or line.strip() == "data: [DONE]"
                return response.status_code == 200 and done

        async def worker() -> None:
            nonlocal failures
            for index in issued:
                began = time.perf_counter()
                try:
                    ok = await one(index)
                except (httpx.HTTPError, KeyError, ValueError):
                    ok = False
                latencies.append(time.perf_counter() - began)
                failures += not ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies, failures


def _renewals(stamps: list[float]) -> list[int]:
    """Token requests grouped into renewals (gaps under ``LIFETIME / 8``): the size of each group."""
    groups: list[list[float]] = []
    for at in sorted(stamps):
        if groups and at - groups[-1][-1] < LIFETIME / 8:
            groups[-1].append(at)
        else:
            groups.append([at])
    return [len(group) for group in groups]


def _variant(ctx: Context, workers: int, redis_url: str | None, rounds: int, count: int) -> dict[str, Any]:
    client_id = ctx.client_id(f"proxy-{workers}w")
    ctx.servers.set_lifetime(client_id, LIFETIME)
    first_stamp = time.monotonic()  # the workers' first tokens count: shared or one per worker
    proxy = _Proxy(ctx, client_id, workers, redis_url)
    try:
        proxy.wait_live()
        proxy.wait_idle()
        # Warm-up: every worker past its first call (LiteLLM's lazy set-up, each worker's first token).
        for model in MODELS.values():
            asyncio.run(_drive(proxy.url, model, CONCURRENCY * 2))
        unauthorized_before = ctx.servers.upstream_counts()[2]
        measured_from = time.monotonic()
        measured: dict[str, list[tuple[float, list[float], int]]] = {name: [] for name in MODELS}
        cpu: dict[str, float] = dict.fromkeys(MODELS, 0.0)
        ticks = os.sysconf("SC_CLK_TCK")
        for round_index in range(rounds):
            for name in rotated(list(MODELS), round_index):
                before = proxy.cpu_seconds(ticks)
                measured[name].append(asyncio.run(_drive(proxy.url, MODELS[name], count)))
                cpu[name] += proxy.cpu_seconds(ticks) - before
            ctx.log(
                f"  {workers} worker(s), round {round_index + 1}: "
                + ", ".join(f"{n} {count / measured[n][-1][0]:.0f} req/s" for n in MODELS)
            )
        last_stamp = time.monotonic()
        unauthorized = ctx.servers.upstream_counts()[2] - unauthorized_before
        secret_in_output = peers.SECRET in proxy.output()
    finally:
        proxy.close()
    stamps = [at for at in ctx.servers.stamps(client_id) if first_stamp <= at <= last_stamp]
    renewals = _renewals(stamps)
    results: dict[str, Any] = {}
    for name, stretches in measured.items():
        latencies = [x for _, lat, _ in stretches for x in lat]
        results[name] = {
            "requests": len(latencies),
            "failed": sum(f for _, _, f in stretches),
            "requests_per_s": round(len(latencies) / sum(w for w, _, _ in stretches), 1),
            "requests_per_s_per_round": [round(count / w, 1) for w, _, _ in stretches],
            "latency_ms": summary(latencies, 1000.0, 1),
            "proxy_cpu_ms_per_request": round(cpu[name] * 1000 / len(latencies), 2),
        }
    ours, static = results["litellm-oauth2"], results["static key"]
    per_round = [
        ratio(o, s)
        for o, s in zip(ours["requests_per_s_per_round"], static["requests_per_s_per_round"], strict=True)
    ]
    seconds = last_stamp - measured_from
    return {
        "workers": workers,
        "token_cache": "redis" if redis_url else "in-memory (per worker)",
        "contenders": results,
        "throughput_ours_over_static": ratio(ours["requests_per_s"], static["requests_per_s"]),
        "throughput_ours_over_static_per_round": per_round,
        "throughput_ratio_median_of_rounds": round(median([r for r in per_round if r is not None]), 3),
        "requests_per_proxy_cpu_second_ours_over_static": ratio(
            static["proxy_cpu_ms_per_request"], ours["proxy_cpu_ms_per_request"]
        ),
        "p50_ours_over_static": ratio(ours["latency_ms"]["median"], static["latency_ms"]["median"]),
        "p99_ours_over_static": ratio(ours["latency_ms"]["p99"], static["latency_ms"]["p99"]),
        "measured_seconds": round(seconds, 1),
        "token_lifetimes": round((last_stamp - first_stamp) / LIFETIME, 2),
        "token_requests": len(stamps),
        "renewals": len(renewals),
        "token_requests_per_renewal": round(len(stamps) / len(renewals), 2) if renewals else None,
        "largest_renewal": max(renewals, default=0),
        "unauthorized_at_gateway": unauthorized,
        "secret_in_proxy_output": secret_in_output,
    }


def _skip_reason() -> str | None:
    for module in ("fastapi", "uvicorn", "orjson", "apscheduler", "backoff"):
        try:
            __import__(module)
        except ImportError:
            return f"the proxy extra is not installed (no {module}): pip install -e '.[proxy]'"
    return None


def run(ctx: Context) -> dict[str, Any]:
    skipped = _skip_reason()
    if skipped:
        return {"skipped": skipped}
    rounds, count = (1, 128) if ctx.quick else (4, 384)
    variants: dict[str, dict[str, Any]] = {}
    ctx.log(f"proxy under load: {CONCURRENCY} in flight, {rounds} rounds of {count} requests per model")
    variants["1 worker"] = _variant(ctx, 1, None, rounds, count)
    redis_binary = shutil.which("redis-server")
    if redis_binary is None:
        variants["4 workers, Redis"] = {"skipped": "no redis-server on PATH (apt-get install redis-server)"}
    else:
        redis_server = _RedisServer(redis_binary)
        try:
            redis_server.wait_ready()
            variants["4 workers, Redis"] = _variant(ctx, 4, redis_server.url, rounds, count)
        finally:
            redis_server.close()
    measured = [v for v in variants.values() if "skipped" not in v]
    return {
        "concurrency": CONCURRENCY,
        "rounds": rounds,
        "requests_per_round_per_model": count,
        "lifetime_s": LIFETIME,
        "variants": variants,
        "goals": {
            "throughput_at_least_0.97x_static": all(
                (v["throughput_ratio_median_of_rounds"] or 0) >= 0.97 for v in measured
            ),
            "p99_at_most_1.05x_static": all((v["p99_ours_over_static"] or 99) <= 1.05 for v in measured),
            "one_token_request_per_renewal_across_workers": all(
                v["token_requests_per_renewal"] == 1.0 for v in measured
            ),
            "no_failed_or_unauthorized_requests": all(
                v["unauthorized_at_gateway"] == 0 and not any(c["failed"] for c in v["contenders"].values())
                for v in measured
            ),
        },
    }
