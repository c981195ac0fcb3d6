"""1. Warm path: nanoseconds to obtain the headers of one call while a valid token is cached.

Each contender's per-call operation is compiled inline into a ``for`` loop (``timeit``), timed
with ``time.perf_counter_ns`` over batches of 1,000 calls; a sample is the mean of one batch.
The batches of all contenders are interleaved (round-robin, order rotated every round), so
load from other processes falls on all of them alike. The garbage collector is off during a
batch, as ``timeit`` does. asyncio paths run the same way inside a coroutine on one event loop,
with a fifth of the calls (the slowest asyncio peer costs ~10-25 us a call: 1M calls would
take a minute of the suite's five).

Beside the header-value figures, the production path: the plugin's bearer auth
(``OAuth2BearerAuth``) driven as httpx drives it as each gateway request leaves (the flow started
and run to the request it yields), timed on a reused ``httpx.Request``, and the whole per-call
work: the token checked at the call's door, then the auth. Most of the auth's time is httpx
writing the header (``Headers.__setitem__`` encodes and scans the header list) and starting the
flow's generators, so that write alone, with a constant value, is timed beside it.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap
import time
import timeit
from collections.abc import Callable, Coroutine
from typing import Any

from . import peers
from .context import Context
from .stats import ratio, rotated, summary

BATCH = 1000
VALUE_ONLY = "litellm-oauth2, header value only (no dict)"
HOOK = "litellm-oauth2, bearer auth (as httpx drives it)"
PER_CALL = "litellm-oauth2, per call: token checked at the door + bearer auth"
HEADER_SET = "httpx: one header set on a request (baseline for the auth)"


def _production_paths(ours: peers.Contender, api_base: str) -> list[peers.Contender]:
    """The bearer auth as httpx drives it, and the per-call work around it, on ``ours``'s cache."""
    import httpx

    from litellm_oauth2._bearer import OAuth2BearerAuth

    get_authorization = ours.namespace["get_authorization"]
    cache = get_authorization.__self__
    auth = OAuth2BearerAuth(cache, peers.PROVIDER, {})
    namespace = {
        "flow": auth.sync_auth_flow,
        "aflow": auth.async_auth_flow,
        "request": httpx.Request("POST", api_base + "/chat/completions"),
        "get_authorization": get_authorization,
        "aget_authorization": ours.namespace["aget_authorization"],
        "k": peers.PROVIDER,
    }
    hook_only = peers.Contender(
        HOOK,
        ours.client_id,
        ours.sync,
        "next(flow(request))",
        namespace,
        ours.asynchronous,
        "await aflow(request).__anext__()",
    )
    per_call = peers.Contender(
        PER_CALL,
        ours.client_id,
        ours.sync,
        "get_authorization(k)\nnext(flow(request))",
        namespace,
        ours.asynchronous,
        "await aget_authorization(k)\nawait aflow(request).__anext__()",
    )
    # What writing any header costs on an httpx request, whoever computes the value.
    header_set = peers.Contender(
        HEADER_SET,
        "",
        lambda: None,
        'request.headers["Authorization"] = value',
        {"request": namespace["request"], "value": "Bearer " + peers.STATIC_API_KEY},
    )
    return [hook_only, per_call, header_set]


def _async_batch(contender: peers.Contender) -> Callable[[int], Coroutine[Any, Any, int]]:
    assert contender.astmt is not None
    source = (
        "async def _batch(_n):\n"
        "    _t0 = _clock()\n"
        "    for _ in range(_n):\n"
        f"{textwrap.indent(contender.astmt, ' ' * 8)}\n"
        "    return _clock() - _t0\n"
    )
    namespace = contender.namespace
    namespace["_clock"] = time.perf_counter_ns
    exec(compile(source, f"<warm {contender.name}>", "exec"), namespace)  # noqa: S102 - our own template
    batch: Callable[[int], Coroutine[Any, Any, int]] = namespace["_batch"]
    return batch


def run(ctx: Context) -> dict[str, Any]:
    calls = 100_000 if ctx.quick else 1_000_000
    async_calls = calls // 5
    rounds = 10 if ctx.quick else 25
    per_round = max(1, calls // BATCH // rounds)
    async_per_round = max(1, async_calls // BATCH // rounds)
    token_url, api_base = ctx.servers.token_url, ctx.servers.api_base
    ours = peers.ours(ctx.client_id("warm-ours"), token_url)
    value_only = peers.Contender(
        VALUE_ONLY,
        ours.client_id,
        ours.sync,
        f'v = get_authorization("{peers.PROVIDER}")',
        ours.namespace,
        ours.asynchronous,
        f'v = await aget_authorization("{peers.PROVIDER}")',
    )
    contenders = [
        ours,
        value_only,
        *_production_paths(ours, api_base),
        peers.httpx_auth(ctx.client_id("warm-httpx-auth"), token_url, api_base),
        peers.authlib(ctx.client_id("warm-authlib"), token_url, api_base),
        peers.proxy_auth(ctx.client_id("warm-proxy-auth"), token_url),
        peers.static(),
        peers.floor(),
    ]
    empty = peers.Contender("empty loop (harness)", "", lambda: None, "pass", {})
    for contender in contenders:
        contender.sync()  # fetch the token: from here on, every call is a cache hit

    loop = asyncio.new_event_loop()
    try:
        async_contenders = [c for c in contenders if c.astmt is not None]
        for contender in async_contenders:
            loop.run_until_complete(_prepare_async(contender))
        async_batches = {c.name: _async_batch(c) for c in async_contenders}
        timers = {
            c.name: timeit.Timer(c.stmt, globals=c.namespace, timer=time.perf_counter_ns) for c in contenders
        }
        timers[empty.name] = timeit.Timer("pass", timer=time.perf_counter_ns)
        sync_samples: dict[str, list[float]] = {name: [] for name in timers}
        async_samples: dict[str, list[float]] = {name: [] for name in async_batches}
        ctx.log(f"warm path: {calls:,} sync and {async_calls:,} asyncio calls per contender, {rounds} rounds")
        for round_index in range(rounds):
            for name in rotated(list(timers), round_index):
                timer = timers[name]
                for _ in range(per_round):
                    sync_samples[name].append(timer.timeit(BATCH) / BATCH)
            for name in rotated(list(async_batches), round_index):
                batch = async_batches[name]
                for _ in range(async_per_round):
                    gc_was_enabled = gc.isenabled()
                    gc.disable()
                    try:
                        elapsed = loop.run_until_complete(batch(BATCH))
                    finally:
                        if gc_was_enabled:
                            gc.enable()
                    async_samples[name].append(elapsed / BATCH)
    finally:
        loop.close()
        for contender in contenders:
            contender.close()

    sync = {name: summary(values) for name, values in sync_samples.items()}
    asynchronous = {name: summary(values) for name, values in async_samples.items()}
    ours_sync, ours_async = sync[peers.OURS]["median"], asynchronous[peers.OURS]["median"]
    floor_name = peers.floor().name
    peer_names = [peers.HTTPX_AUTH, peers.AUTHLIB, peers.PROXY_AUTH]
    ratios_sync = {
        name: ratio(ours_sync, sync[name]["median"]) for name in [*peer_names, peers.STATIC, floor_name]
    }
    ratios_async = {
        name: ratio(ours_async, asynchronous[name]["median"])
        for name in asynchronous
        if name not in (peers.OURS, VALUE_ONLY, HOOK, PER_CALL, HEADER_SET)
    }
    harness = sync[empty.name]["median"] or 0.0
    net_floor = ratio(sync[VALUE_ONLY]["median"] - harness, sync[floor_name]["median"] - harness)
    return {
        "calls_per_contender": per_round * rounds * BATCH,
        "asyncio_calls_per_contender": async_per_round * rounds * BATCH,
        "batch_size": BATCH,
        "unit": "ns per call (mean of one batch); n = batches",
        "sync": sync,
        "async": asynchronous,
        "ratio_ours_over_peer_sync": ratios_sync,
        "ratio_ours_over_peer_async": ratios_async,
        "ratio_header_value_over_floor_net_of_loop": net_floor,
        "ratio_header_value_over_floor": ratio(sync[VALUE_ONLY]["median"], sync[floor_name]["median"]),
        "ratio_auth_over_floor": ratio(sync[HOOK]["median"], sync[floor_name]["median"]),
        "ratio_per_call_over_floor": ratio(sync[PER_CALL]["median"], sync[floor_name]["median"]),
        "ratio_auth_over_header_set": ratio(sync[HOOK]["median"], sync[HEADER_SET]["median"]),
        "goals": {
            "faster_than_every_peer_sync": all(
                (r is not None and r < 1) for n, r in ratios_sync.items() if n in peer_names
            ),
            "faster_than_every_peer_async": all(
                (r is not None and r < 1) for n, r in ratios_async.items() if n in peer_names
            ),
            # The floor builds no dict either: compare the lookup that yields the header value.
            "within_2x_of_floor": (ratio(sync[VALUE_ONLY]["median"], sync[floor_name]["median"]) or 99)
            <= 2.0,
            "bearer_auth_within_2x_of_floor": (ratio(sync[HOOK]["median"], sync[floor_name]["median"]) or 99)
            <= 2.0,
        },
    }


async def _prepare_async(contender: peers.Contender) -> None:
    peers.prepare_async_namespace(contender)
    if contender.asynchronous is not None and contender.name == peers.AUTHLIB:
        await contender.asynchronous()  # the async client fetches its own first token
