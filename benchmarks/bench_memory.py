"""8. Memory and handles over time: many calls across short token lifetimes, then many event loops.

Each contender runs in a fresh interpreter of its own ('spawn'), against the loopback gateway:

* litellm-oauth2: ``litellm_oauth2.enable(config=...)``, ``model="bench/test-model"``, tokens of
  ``LIFETIME`` seconds (so the run crosses many refreshes);
* static key: ``model="openai/test-model"`` with ``api_base`` and ``api_key``.

After a warm-up (LiteLLM builds its own state lazily), ``CALLS`` calls, a third each
``completion``, ``acompletion`` (``CONCURRENCY`` in flight on one event loop) and streamed
(sync and asyncio alternating), interleaved in batches; then ``LOOPS`` successive
``asyncio.run`` loops, each making one ``acompletion``, as a CLI or a task queue does. At the
start and at the end: resident memory, threads alive, open file descriptors, and the
``httpx.AsyncClient`` objects alive (found by the garbage collector) before and after
``gc.collect()``: per-event-loop clients that outlive their loop show there.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from . import peers
from .context import Context

LIFETIME = 2.0
CONCURRENCY = 32
BATCH = 96
MESSAGES = [{"role": "user", "content": "hello"}]


def _snapshot() -> dict[str, Any]:
    import gc
    import threading

    import httpx

    def async_clients() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, httpx.AsyncClient))

    before_gc = async_clients()
    gc.collect()
    rss_kib = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    kinds: dict[str, int] = {}
    for thread in threading.enumerate():
        kind = thread.name.rstrip("0123456789_-() ").removesuffix(" (worker") or "?"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {
        "rss_mib": round(rss_kib / 1024, 1),
        "threads": threading.active_count(),
        "threads_by_name": dict(sorted(kinds.items())),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "async_clients_before_gc": before_gc,
        "async_clients": async_clients(),
    }


def _child(
    mode: str, token_url: str, api_base: str, client_id: str, calls: int, loops: int, out: Any
) -> None:
    """A fresh interpreter: set up one contender, run the calls and the loops, report snapshots."""
    import asyncio

    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm

    litellm.suppress_debug_info = True
    if mode == "ours":
        import litellm_oauth2

        config = peers.ours_config(client_id, token_url, expiry_buffer=LIFETIME / 4, api_base=api_base)
        litellm_oauth2.enable(config=config)
        kwargs: dict[str, Any] = {"model": f"{peers.PROVIDER}/test-model"}
    else:
        kwargs = {"model": "openai/test-model", "api_base": api_base, "api_key": peers.STATIC_API_KEY}
    failed = 0

    def sync_call(stream: bool) -> None:
        nonlocal failed
        try:
            if stream:
                text = "".join(
                    c.choices[0].delta.content or ""
                    for c in litellm.completion(messages=MESSAGES, stream=True, **kwargs)
                )
            else:
                text = litellm.completion(messages=MESSAGES, **kwargs).choices[0].message.content
            failed += not text
        except Exception:
            failed += 1

    async def async_call(stream: bool) -> None:
        nonlocal failed
        try:
            if stream:
                chunks = await litellm.acompletion(messages=MESSAGES, stream=True, **kwargs)
                text = "".join([c.choices[0].delta.content or "" async for c in chunks])
            else:
                text = (await litellm.acompletion(messages=MESSAGES, **kwargs)).choices[0].message.content
            failed += not text
        except Exception:
            failed += 1

    async def async_batch(count: int) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(index: int) -> None:
            async with gate:
                await async_call(stream=index % 3 == 0)

        await asyncio.gather(*(one(i) for i in range(count)))

    loop = asyncio.new_event_loop()
    try:
        sync_call(False)
        sync_call(True)
        loop.run_until_complete(async_batch(8))
        asyncio.run(async_call(False))
        start = _snapshot()
        done = 0
        while done < calls:
            size = min(BATCH, calls - done)
            for index in range(size // 3):
                sync_call(stream=index % 2 == 1)
            loop.run_until_complete(async_batch(size - size // 3))
            done += size
        for _ in range(loops):
            asyncio.run(async_call(False))
        end = _snapshot()
    finally:
        loop.close()
    out.put({"start": start, "end": end, "failed": failed})


def _measure(ctx: Context, mode: str, calls: int, loops: int) -> dict[str, Any]:
    client_id = ctx.client_id(f"memory-{mode}")
    ctx.servers.set_lifetime(client_id, LIFETIME)
    spawn = multiprocessing.get_context("spawn")
    out = spawn.Queue()
    args = (mode, ctx.servers.token_url, ctx.servers.api_base, client_id, calls, loops, out)
    process = spawn.Process(target=_child, args=args, daemon=True)
    process.start()
    try:
        report: dict[str, Any] = out.get(timeout=1800)
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join(10)
    report["token_requests"] = ctx.servers.token_requests(client_id) if mode == "ours" else 0
    return report


def run(ctx: Context) -> dict[str, Any]:
    calls, loops = (300, 20) if ctx.quick else (10_000, 200)
    ctx.log(f"memory and handles: {calls:,} calls with {LIFETIME:g} s tokens, then {loops} asyncio.run loops")
    contenders: dict[str, dict[str, Any]] = {}
    for name, mode in ((peers.STATIC, "static"), (peers.OURS, "ours")):
        contenders[name] = _measure(ctx, mode, calls, loops)
        v = contenders[name]
        ctx.log(
            f"  {name}: RSS {v['start']['rss_mib']} -> {v['end']['rss_mib']} MiB, threads "
            f"{v['start']['threads']} -> {v['end']['threads']}, fds {v['start']['open_fds']} -> "
            f"{v['end']['open_fds']}, AsyncClients {v['start']['async_clients']} -> {v['end']['async_clients']}"
        )
    ours, static = contenders[peers.OURS], contenders[peers.STATIC]

    def growth(v: dict[str, Any], key: str) -> float:
        return float(v["end"][key] - v["start"][key])

    return {
        "calls": calls,
        "loops": loops,
        "lifetime_s": LIFETIME,
        "contenders": contenders,
        "growth_beyond_baseline": {
            key: round(growth(ours, key) - growth(static, key), 1)
            for key in ("rss_mib", "threads", "open_fds", "async_clients")
        },
        "goals": {
            "no_thread_or_fd_growth_beyond_the_baseline": growth(ours, "threads") <= growth(static, "threads")
            and growth(ours, "open_fds") <= growth(static, "open_fds"),
            "per_loop_clients_released": growth(ours, "async_clients") <= growth(static, "async_clients") + 1,
            "no_failed_calls": ours["failed"] == 0 and static["failed"] == 0,
        },
    }
