"""2. Stampede: 256 threads and 256 asyncio tasks ask a cold cache for a token at the same instant.

Per contender and round: a fresh client (cold cache, its own client id), the threads parked on
an ``Event`` and the tasks (one event loop in its own thread) parked on an ``asyncio.Event``,
both released together. Reported: token requests the token server received, and the time from
the release until the last caller holds a token (plus each caller's own wait). The token
server answers after ``IDP_LATENCY`` seconds, like a nearby identity provider.

A contender whose first round took longer than ``SLOW_ROUND`` seconds is not repeated: its
figures follow from its design (one fetch after another), not from noise, and repeating it
would take most of the suite's time budget. A contender still running after the deadline
is cut short: the token server starts
answering its requests with an immediate 503 so its callers fail fast, and the row is marked.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from . import peers
from .context import Context
from .stats import median, rotated, summary

IDP_LATENCY = 0.02
SLOW_ROUND = 5.0


def _factories(ctx: Context) -> list[tuple[str, Callable[[str], peers.Contender]]]:
    token_url, api_base = ctx.servers.token_url, ctx.servers.api_base
    return [
        (peers.OURS, lambda cid: peers.ours(cid, token_url)),
        (peers.HTTPX_AUTH, lambda cid: peers.httpx_auth(cid, token_url, api_base)),
        (peers.AUTHLIB, lambda cid: peers.authlib(cid, token_url, api_base)),
        (peers.PROXY_AUTH, lambda cid: peers.proxy_auth(cid, token_url)),
        (peers.STATIC, lambda cid: peers.static(cid)),
    ]


def _one(
    ctx: Context, contender: peers.Contender, threads: int, tasks: int, deadline: float
) -> dict[str, Any]:
    go = threading.Event()
    lock = threading.Lock()
    waits: list[float] = []
    errors: dict[str, int] = {}
    released: list[float] = []

    def record(ok: BaseException | None) -> None:
        with lock:
            if ok is None:
                waits.append(time.monotonic() - released[0])
            else:
                errors[type(ok).__name__] = errors.get(type(ok).__name__, 0) + 1

    def thread_caller() -> None:
        go.wait()
        try:
            contender.sync()
        except Exception as exc:
            record(exc)
        else:
            record(None)

    loop = asyncio.new_event_loop()
    parked = threading.Event()
    holder: dict[str, asyncio.Event] = {}

    async def task_caller(start: asyncio.Event) -> None:
        await start.wait()
        assert contender.asynchronous is not None
        try:
            await contender.asynchronous()
        except Exception as exc:
            record(exc)
        else:
            record(None)

    async def main() -> None:
        peers.prepare_async_namespace(contender)
        start = holder["start"] = asyncio.Event()
        running = [asyncio.ensure_future(task_caller(start)) for _ in range(tasks)]
        await asyncio.sleep(0.01)
        parked.set()
        await asyncio.gather(*running)

    workers = [threading.Thread(target=thread_caller, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    loop_thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    loop_thread.start()
    parked.wait(30)
    time.sleep(0.1)  # every thread is parked on the event by now
    released.append(time.monotonic())
    go.set()
    loop.call_soon_threadsafe(holder["start"].set)
    end = released[0] + deadline
    for worker in [*workers, loop_thread]:
        worker.join(max(0.0, end - time.monotonic()))
    elapsed = time.monotonic() - released[0]
    cut_short = any(worker.is_alive() for worker in [*workers, loop_thread])
    requests_at_cut = None
    if cut_short:
        requests_at_cut = ctx.servers.token_requests(contender.client_id)
        ctx.servers.set_down(contender.client_id, True)
        for worker in [*workers, loop_thread]:
            worker.join(60)
    loop.close()
    contender.close()
    if requests_at_cut is not None:
        requests = (
            requests_at_cut  # what it had asked for when the deadline came; the 503s after are not counted
        )
    else:
        requests = ctx.servers.token_requests(contender.client_id) if contender.client_id else 0
    return {
        "elapsed_s": elapsed,
        "token_requests": requests,
        "all_hold_token_s": max(waits) if waits and not errors else None,
        "waits": waits,
        "errors": errors,
        "cut_short": cut_short,
    }


def run(ctx: Context) -> dict[str, Any]:
    threads = tasks = 32 if ctx.quick else 256
    rounds = 1 if ctx.quick else 3
    deadline = 10.0 if ctx.quick else 15.0
    ctx.servers.set_delay(IDP_LATENCY)
    factories = _factories(ctx)
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in factories}
    ctx.log(f"stampede: {threads} threads + {tasks} asyncio tasks, cold, {rounds} round(s)")
    try:
        for round_index in range(rounds):
            for name, factory in rotated(factories, round_index):
                previous = raw[name]
                if previous and (previous[0]["elapsed_s"] > SLOW_ROUND or previous[0]["cut_short"]):
                    continue
                client_id = ctx.client_id(f"stampede-{name}") if name != peers.STATIC else ""
                result = _one(ctx, factory(client_id), threads, tasks, deadline)
                ctx.log(
                    f"  {name}: {result['token_requests']} token requests, "
                    f"all hold a token after {result['all_hold_token_s']}"
                    + (" (cut short)" if result["cut_short"] else "")
                )
                raw[name].append(result)
    finally:
        ctx.servers.set_delay(0.0)
    contenders: dict[str, Any] = {}
    for name, results in raw.items():
        all_hold = [r["all_hold_token_s"] for r in results if r["all_hold_token_s"] is not None]
        errors: dict[str, int] = {}
        for r in results:
            for kind, count in r["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        contenders[name] = {
            "token_requests_per_round": [r["token_requests"] for r in results],
            "token_requests_median": median([r["token_requests"] for r in results]),
            "all_hold_token_ms": summary(all_hold, 1000.0),
            "caller_wait_ms": summary([w for r in results for w in r["waits"]], 1000.0),
            "errors": errors,
            "rounds_cut_short": sum(1 for r in results if r["cut_short"]),
        }
    ours = contenders[peers.OURS]
    return {
        "threads": threads,
        "asyncio_tasks": tasks,
        "rounds": rounds,
        "idp_latency_ms": IDP_LATENCY * 1000,
        "deadline_s": deadline,
        "contenders": contenders,
        "goals": {
            "one_token_request": all(n == 1 for n in ours["token_requests_per_round"]) and not ours["errors"]
        },
    }
