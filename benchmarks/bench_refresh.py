"""4. Refresh under load: 32 workers call the gateway continuously across 10 short token lifetimes.

A call is: obtain the headers from the contender, then ``GET /v1/models`` on the loopback
gateway over the worker's own keep-alive connection (the gateway checks the token), then
``THINK`` seconds of pause. Every call's start and end are recorded on the monotonic clock.

Lifetimes and margins, the same usable life for everyone: the token server grants ``LIFETIME``
seconds; ours gets ``expiry_buffer_seconds = MARGIN``, httpx-auth ``early_expiry = MARGIN`` and
Authlib ``leeway = MARGIN``. LiteLLM's proxy_auth has a fixed 60 s margin that cannot be
configured, so it is granted ``60 + LIFETIME - MARGIN`` seconds: the same usable life. (With a
lifetime under 60 s it would otherwise fetch a token on every call.)

Refresh windows are found from the token server's side, the same way for every contender: its
``/token`` requests are grouped (gaps under ``LIFETIME / 8``), and a window runs from 5 ms
before the first request of a group to ``IDP_LATENCY + 50 ms`` after its last. A call is
inside a window if its interval overlaps one. Reported per contender: p50/p99 latency inside
and outside, token requests per lifetime, and token requests per renewal (per group). As a
yardstick for noise, the same windows moved a quarter lifetime later ("placebo": nothing
renews there) give a p99 that should differ from the outside p99 by chance alone.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from . import peers
from .context import Context
from .stats import ratio, summary

LIFETIME = 2.0
MARGIN = LIFETIME / 4
IDP_LATENCY = 0.02
WORKERS = 32
THINK = 0.01


def _windows(stamps: list[float]) -> list[tuple[float, float, int]]:
    groups: list[list[float]] = []
    for at in sorted(stamps):
        if groups and at - groups[-1][-1] < LIFETIME / 8:
            groups[-1].append(at)
        else:
            groups.append([at])
    return [(group[0] - 0.005, group[-1] + IDP_LATENCY + 0.05, len(group)) for group in groups]


def _run_one(ctx: Context, contender: peers.Contender, lifetimes: int) -> dict[str, Any]:
    api = urlsplit(ctx.servers.api_base)
    host, port = api.hostname or "127.0.0.1", api.port or 80
    path = api.path + "/models"
    contender.sync()  # first token before the clock starts: this is about renewals, not cold starts
    calls: list[tuple[float, float, int]] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    end = start + lifetimes * LIFETIME

    def worker() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        mine: list[tuple[float, float, int]] = []
        while time.monotonic() < start:
            time.sleep(0.01)
        while (t0 := time.monotonic()) < end:
            status = 0
            try:
                authorization = contender.sync()["Authorization"]
                connection.request("GET", path, headers={"Authorization": authorization})
                response = connection.getresponse()
                response.read()
                status = response.status
            except Exception as exc:
                with lock:
                    failures[type(exc).__name__] = failures.get(type(exc).__name__, 0) + 1
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            mine.append((t0, time.monotonic(), status))
            time.sleep(THINK)
        connection.close()
        with lock:
            calls.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    contender.close()
    # Up to the end of the last call: a renewal begun before the deadline may reach the IdP after it.
    last = max((t1 for _, t1, _ in calls), default=end)
    stamps = [at for at in ctx.servers.stamps(contender.client_id) if start <= at <= last]
    windows = _windows(stamps)
    # Placebo: the same windows moved a quarter lifetime later, where nobody renews. The p99 of
    # the calls there, against the p99 outside, shows how much two p99s differ by noise alone.
    shift = LIFETIME / 4
    placebo_windows = [(a + shift, b + shift) for a, b, _ in windows]
    inside: list[float] = []
    outside: list[float] = []
    placebo: list[float] = []
    for t0, t1, _status in calls:
        overlaps = any(t0 < w_end and t1 > w_start for w_start, w_end, _ in windows)
        (inside if overlaps else outside).append(t1 - t0)
        if not overlaps and any(t0 < b and t1 > a for a, b in placebo_windows):
            placebo.append(t1 - t0)
    not_ok = sum(1 for _, _, status in calls if status != 200)
    in_stats, out_stats = summary(inside, 1000.0, 2), summary(outside, 1000.0, 2)
    return {
        "calls": len(calls),
        "calls_not_ok": not_ok,
        "exceptions": failures,
        "latency_inside_ms": in_stats,
        "latency_outside_ms": out_stats,
        "p99_inside_over_outside": ratio(in_stats["p99"], out_stats["p99"]),
        "p50_inside_over_outside": ratio(in_stats["median"], out_stats["median"]),
        "latency_placebo_ms": summary(placebo, 1000.0, 2),
        "p99_placebo_over_outside": ratio(summary(placebo, 1000.0, 2)["p99"], out_stats["p99"]),
        "token_requests": len(stamps),
        "renewals": len(windows),
        "token_requests_per_lifetime": round(len(stamps) / lifetimes, 2),
        "token_requests_per_renewal": round(len(stamps) / len(windows), 2) if windows else None,
        "largest_renewal": max((n for _, _, n in windows), default=0),
    }


def run(ctx: Context) -> dict[str, Any]:
    lifetimes = 1 if ctx.quick else 10
    token_url, api_base = ctx.servers.token_url, ctx.servers.api_base
    builders: list[tuple[str, float, Callable[[str], peers.Contender]]] = [
        (peers.OURS, LIFETIME, lambda cid: peers.ours(cid, token_url, expiry_buffer=MARGIN)),
        (peers.HTTPX_AUTH, LIFETIME, lambda cid: peers.httpx_auth(cid, token_url, api_base, margin=MARGIN)),
        (peers.AUTHLIB, LIFETIME, lambda cid: peers.authlib(cid, token_url, api_base, margin=MARGIN)),
        (
            peers.PROXY_AUTH,
            peers.DEFAULT_MARGIN[peers.PROXY_AUTH] + LIFETIME - MARGIN,
            lambda cid: peers.proxy_auth(cid, token_url),
        ),
    ]
    ctx.log(
        f"refresh under load: {WORKERS} workers, {lifetimes} lifetimes of {LIFETIME:g} s per contender, "
        f"IdP latency {IDP_LATENCY * 1000:g} ms"
    )
    ctx.servers.set_delay(IDP_LATENCY)
    results: dict[str, Any] = {}
    try:
        for name, lifetime, build in builders:
            client_id = ctx.client_id(f"refresh-{name}")
            ctx.servers.set_lifetime(client_id, lifetime)
            results[name] = _run_one(ctx, build(client_id), lifetimes)
            results[name]["granted_lifetime_s"] = lifetime
            ctx.log(
                f"  {name}: p99 inside {results[name]['latency_inside_ms']['p99']} ms, "
                f"outside {results[name]['latency_outside_ms']['p99']} ms, "
                f"{results[name]['token_requests']} token requests"
            )
    finally:
        ctx.servers.set_delay(0.0)
    ours = results[peers.OURS]
    return {
        "workers": WORKERS,
        "lifetimes": lifetimes,
        "lifetime_s": LIFETIME,
        "margin_s": MARGIN,
        "idp_latency_ms": IDP_LATENCY * 1000,
        "think_time_ms": THINK * 1000,
        "contenders": results,
        "goals": {
            "p99_inside_within_10pct_of_outside": (ours["p99_inside_over_outside"] or 99) <= 1.10,
            "one_token_request_per_renewal": ours["token_requests_per_renewal"] == 1.0,
            "no_failed_calls": ours["calls_not_ok"] == 0,
        },
    }
