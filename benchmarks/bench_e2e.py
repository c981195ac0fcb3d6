"""3. End to end: ``litellm.completion`` and ``acompletion`` against the loopback gateway.

Two ways to reach the same OpenAI-compatible upstream, in the same process:

* litellm-oauth2: ``model="bench/test-model"`` through ``OAuth2Handler(config=...)``;
* static key: ``model="openai/test-model"`` with ``api_base`` and ``api_key`` (no OAuth2).

(``litellm.proxy_auth`` could take part the same way, but every LiteLLM call costs about 10 ms
of CPU here, and the suite's time budget is better spent on the one ratio the goal is about.)

Each round runs both modes in turn (order rotated): a sequential batch of ``completion`` calls,
then a batch of ``acompletion`` calls with 32 in flight on one persistent event loop. A round's
throughput is calls / wall time; the ratio ours/static is taken per round (paired) and its
median reported. Every response is checked, and the gateway must have seen no unauthorized call.

Wall-clock throughput on a shared 2-core machine moves with everyone else's load, so the CPU
time this process spends per call (``time.process_time``, all its threads) is recorded too: its
ratio, static over ours, is the throughput ratio when the client is the bottleneck, and is
far steadier from round to round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import peers
from .context import Context
from .stats import median, ratio, rotated, summary

MESSAGES = [{"role": "user", "content": "hello"}]
CONCURRENCY = 32


def run(ctx: Context) -> dict[str, Any]:
    import litellm

    from litellm_oauth2 import OAuth2Handler

    litellm.suppress_debug_info = True
    peers.forget_proxy_auth_module(litellm)
    api_base, token_url = ctx.servers.api_base, ctx.servers.token_url
    rounds = 2 if ctx.quick else 12
    sync_calls = 20 if ctx.quick else 25
    async_calls = 64 if ctx.quick else 96
    handler = OAuth2Handler(config=peers.ours_config(ctx.client_id("e2e-ours"), token_url, api_base=api_base))

    def ours_kwargs() -> dict[str, Any]:
        return {"model": f"{peers.PROVIDER}/test-model", "messages": MESSAGES}

    def static_kwargs() -> dict[str, Any]:
        return {
            "model": "openai/test-model",
            "messages": MESSAGES,
            "api_base": api_base,
            "api_key": peers.STATIC_API_KEY,
        }

    modes: dict[str, Callable[[], dict[str, Any]]] = {
        peers.OURS: ours_kwargs,
        peers.STATIC: static_kwargs,
    }

    def check(response: Any) -> None:
        text = response.choices[0].message.content
        if not text.startswith("Hello from upstream"):
            raise AssertionError(f"unexpected completion: {text!r}")

    def sync_batch(
        kwargs: Callable[[], dict[str, Any]], n: int, latencies: list[float], cpu: list[float]
    ) -> float:
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(n):
            t0 = time.perf_counter()
            check(litellm.completion(**kwargs()))
            latencies.append(time.perf_counter() - t0)
        cpu.append((time.process_time() - cpu_started) / n)
        return n / (time.perf_counter() - started)

    async def async_batch(
        kwargs: Callable[[], dict[str, Any]], n: int, latencies: list[float], cpu: list[float]
    ) -> float:
        remaining = [n]

        async def worker() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                check(await litellm.acompletion(**kwargs()))
                latencies.append(time.perf_counter() - t0)

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        cpu.append((time.process_time() - cpu_started) / n)
        return n / (time.perf_counter() - started)

    loop = asyncio.new_event_loop()

    def run_async(awaitable: Awaitable[float]) -> float:
        return loop.run_until_complete(awaitable)

    throughput: dict[str, dict[str, list[float]]] = {
        "sync": {m: [] for m in modes},
        "async": {m: [] for m in modes},
    }
    latency: dict[str, dict[str, list[float]]] = {
        "sync": {m: [] for m in modes},
        "async": {m: [] for m in modes},
    }
    cpu: dict[str, dict[str, list[float]]] = {
        "sync": {m: [] for m in modes},
        "async": {m: [] for m in modes},
    }
    try:
        ctx.servers.upstream_reset()
        for kwargs in modes.values():  # warm-up: first token, connection pools, LiteLLM caches
            sync_batch(kwargs, 3, [], [])
            run_async(async_batch(kwargs, CONCURRENCY, [], []))
        ctx.log(
            f"end to end: {rounds} rounds x ({sync_calls} completion + {async_calls} acompletion, "
            f"{CONCURRENCY} in flight) per mode"
        )
        for round_index in range(rounds):
            for name in rotated(list(modes), round_index):
                kwargs = modes[name]
                throughput["sync"][name].append(
                    sync_batch(kwargs, sync_calls, latency["sync"][name], cpu["sync"][name])
                )
                throughput["async"][name].append(
                    run_async(async_batch(kwargs, async_calls, latency["async"][name], cpu["async"][name]))
                )
        requests, _authorized, unauthorized = ctx.servers.upstream_counts()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        handler.close()

    result: dict[str, Any] = {
        "rounds": rounds,
        "completion_calls_per_round": sync_calls,
        "acompletion_calls_per_round": async_calls,
        "acompletion_concurrency": CONCURRENCY,
        "gateway_requests": requests,
        "gateway_unauthorized": unauthorized,
    }
    for kind in ("sync", "async"):
        paired = [
            ratio(o, s, 4)
            for o, s in zip(throughput[kind][peers.OURS], throughput[kind][peers.STATIC], strict=True)
        ]
        result[kind] = {
            "throughput_calls_per_s": {m: summary(v) for m, v in throughput[kind].items()},
            "latency_ms": {m: summary(v, 1000.0, 2) for m, v in latency[kind].items()},
            "ratio_ours_over_static_per_round": paired,
            "ratio_ours_over_static": round(median([r for r in paired if r is not None]), 4),
            "client_cpu_ms_per_call": {m: summary(v, 1000.0, 3) for m, v in cpu[kind].items()},
            # Calls per CPU-second of this process, ours over static: what the throughput ratio
            # is when the client is the bottleneck, and much less disturbed by other processes.
            "cpu_ratio_ours_over_static": ratio(
                median(cpu[kind][peers.STATIC]), median(cpu[kind][peers.OURS]), 4
            ),
        }
    result["goals"] = {
        "within_3pct_of_static_sync": result["sync"]["ratio_ours_over_static"] >= 0.97,
        "within_3pct_of_static_async": result["async"]["ratio_ours_over_static"] >= 0.97,
        "within_3pct_of_static_sync_by_client_cpu": (result["sync"]["cpu_ratio_ours_over_static"] or 0)
        >= 0.97,
        "within_3pct_of_static_async_by_client_cpu": (result["async"]["cpu_ratio_ours_over_static"] or 0)
        >= 0.97,
        "no_unauthorized_requests": unauthorized == 0,
    }
    return result
