"""4. Refresh under load: 32 workers call the gateway continuously across short token lifetimes.

Ours and the baseline (below) alternate over ``ROUNDS`` rounds of ``LIFETIMES_PER_ROUND``
lifetimes each, pooled; each peer runs ``LIFETIMES_PER_ROUND`` lifetimes once.

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

A second yardstick separates the machine from the client: "static key, renewals in another
process" has the 32 workers send a static key while a separate process renews a token with
our cache at the same cadence. Its windows cost the workers nothing but the identity
provider's and the renewing process's CPU on the same cores (on two cores, RSA signing alone
is felt), so its p99 inside/outside is what any contender pays here for renewals happening at
all. For ours, the cache's own counter also says how many callers waited on the identity
provider after warm-up.
"""

from __future__ import annotations

import http.client
import multiprocessing
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from . import peers
from ._worker import renewer
from .context import Context
from .stats import ratio, rotated, summary

LIFETIME = 2.0
MARGIN = LIFETIME / 4
IDP_LATENCY = 0.02
WORKERS = 32
THINK = 0.01
ROUNDS = 4
LIFETIMES_PER_ROUND = 5


def _windows(stamps: list[float]) -> list[tuple[float, float, int]]:
    groups: list[list[float]] = []
    for at in sorted(stamps):
        if groups and at - groups[-1][-1] < LIFETIME / 8:
            groups[-1].append(at)
        else:
            groups.append([at])
    return [(group[0] - 0.005, group[-1] + IDP_LATENCY + 0.05, len(group)) for group in groups]


BASELINE = "static key, renewals in another process"


class _Renewer:
    """One renewing process for the whole benchmark: our cache, asked every 5 ms while active."""

    def __init__(self, ctx: Context) -> None:
        self.client_id = ctx.client_id("refresh-baseline")
        ctx.servers.set_lifetime(self.client_id, LIFETIME)
        spawn = multiprocessing.get_context("spawn")
        self.ready, self.active, self.stop = spawn.Event(), spawn.Event(), spawn.Event()
        config = peers.ours_config(self.client_id, ctx.servers.token_url, expiry_buffer=MARGIN)
        self.process = spawn.Process(
            target=renewer,
            args=(config, peers.PROVIDER, self.ready, self.active, self.stop),
            daemon=True,
        )
        self.process.start()

    def run(self, ctx: Context, lifetimes: int) -> _Round:
        if not self.ready.wait(120):
            raise RuntimeError("the baseline's renewing process did not start")
        self.active.set()
        try:
            time.sleep(0.2)  # its first renewal after a pause is a cold fetch: let it finish
            return _run_one(ctx, peers.static(self.client_id), lifetimes)
        finally:
            self.active.clear()

    def close(self) -> None:
        self.stop.set()
        self.process.join(10)


@dataclass
class _Round:
    """One measured stretch of one contender: every call's latency, split by refresh windows."""

    lifetimes: int
    inside: list[float] = field(default_factory=list)
    outside: list[float] = field(default_factory=list)
    placebo: list[float] = field(default_factory=list)
    calls: int = 0
    calls_not_ok: int = 0
    exceptions: dict[str, int] = field(default_factory=dict)
    token_requests: int = 0
    renewals: list[int] = field(default_factory=list)
    waited: int | None = None


def _run_one(ctx: Context, contender: peers.Contender, lifetimes: int) -> _Round:
    api = urlsplit(ctx.servers.api_base)
    host, port = api.hostname or "127.0.0.1", api.port or 80
    path = api.path + "/models"
    contender.sync()  # first token before the clock starts: this is about renewals, not cold starts
    waits_before = contender.stats().waits if contender.stats else None
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
    result = _Round(lifetimes, calls=len(calls), exceptions=failures)
    if contender.stats is not None and waits_before is not None:
        result.waited = contender.stats().waits - waits_before
    # Up to the end of the last call: a renewal begun before the deadline may reach the IdP after it.
    last = max((t1 for _, t1, _ in calls), default=end)
    stamps = [at for at in ctx.servers.stamps(contender.client_id) if start <= at <= last]
    windows = _windows(stamps)
    # Placebo: the same windows moved a quarter lifetime later, where nobody renews. The p99 of
    # the calls there, against the p99 outside, shows how much two p99s differ by noise alone.
    shift = LIFETIME / 4
    placebo_windows = [(a + shift, b + shift) for a, b, _ in windows]
    for t0, t1, status in calls:
        overlaps = any(t0 < w_end and t1 > w_start for w_start, w_end, _ in windows)
        (result.inside if overlaps else result.outside).append(t1 - t0)
        if not overlaps and any(t0 < b and t1 > a for a, b in placebo_windows):
            result.placebo.append(t1 - t0)
        result.calls_not_ok += status != 200
    result.token_requests = len(stamps)
    result.renewals = [n for _, _, n in windows]
    return result


def _brief(result: _Round) -> str:
    inside, outside = summary(result.inside, 1000.0, 2), summary(result.outside, 1000.0, 2)
    return (
        f"p99 inside {inside['p99']} ms, outside {outside['p99']} ms, {result.token_requests} token requests"
    )


def _pooled(rounds: list[_Round]) -> dict[str, Any]:
    """One contender's rounds as one sample: p99s of all calls, plus each round's ratio for spread."""
    inside = [x for r in rounds for x in r.inside]
    outside = [x for r in rounds for x in r.outside]
    placebo = [x for r in rounds for x in r.placebo]
    in_stats, out_stats, placebo_stats = (summary(x, 1000.0, 2) for x in (inside, outside, placebo))
    renewals = [n for r in rounds for n in r.renewals]
    requests = sum(r.token_requests for r in rounds)
    waited = [r.waited for r in rounds]
    exceptions: dict[str, int] = {}
    for r in rounds:
        for name, count in r.exceptions.items():
            exceptions[name] = exceptions.get(name, 0) + count
    return {
        "rounds": len(rounds),
        "lifetimes": sum(r.lifetimes for r in rounds),
        "calls": sum(r.calls for r in rounds),
        "calls_not_ok": sum(r.calls_not_ok for r in rounds),
        "exceptions": exceptions,
        "latency_inside_ms": in_stats,
        "latency_outside_ms": out_stats,
        "latency_placebo_ms": placebo_stats,
        "p99_inside_over_outside": ratio(in_stats["p99"], out_stats["p99"]),
        "p50_inside_over_outside": ratio(in_stats["median"], out_stats["median"]),
        "p99_placebo_over_outside": ratio(placebo_stats["p99"], out_stats["p99"]),
        "p99_inside_over_outside_per_round": [
            ratio(summary(r.inside, 1000.0, 2)["p99"], summary(r.outside, 1000.0, 2)["p99"]) for r in rounds
        ],
        "token_requests": requests,
        "renewals": len(renewals),
        "token_requests_per_lifetime": round(requests / sum(r.lifetimes for r in rounds), 2),
        "token_requests_per_renewal": round(requests / len(renewals), 2) if renewals else None,
        "largest_renewal": max(renewals, default=0),
        "callers_that_waited_on_the_idp": None if None in waited else sum(w or 0 for w in waited),
    }


def run(ctx: Context) -> dict[str, Any]:
    # Ours and the baseline alternate over several rounds (the machine's load drifts); each peer
    # runs once, its figures being far from the goal either way.
    rounds, lifetimes = (1, 1) if ctx.quick else (ROUNDS, LIFETIMES_PER_ROUND)
    peer_lifetimes = 1 if ctx.quick else LIFETIMES_PER_ROUND
    token_url, api_base = ctx.servers.token_url, ctx.servers.api_base
    peer_builders: list[tuple[str, float, Callable[[str], peers.Contender]]] = [
        (peers.HTTPX_AUTH, LIFETIME, lambda cid: peers.httpx_auth(cid, token_url, api_base, margin=MARGIN)),
        (peers.AUTHLIB, LIFETIME, lambda cid: peers.authlib(cid, token_url, api_base, margin=MARGIN)),
        (
            peers.PROXY_AUTH,
            peers.DEFAULT_MARGIN[peers.PROXY_AUTH] + LIFETIME - MARGIN,
            lambda cid: peers.proxy_auth(cid, token_url),
        ),
    ]
    ctx.log(
        f"refresh under load: {WORKERS} workers; ours and the baseline {rounds} x {lifetimes} lifetimes "
        f"of {LIFETIME:g} s, alternating; each peer {peer_lifetimes} lifetimes; IdP latency "
        f"{IDP_LATENCY * 1000:g} ms"
    )
    ctx.servers.set_delay(IDP_LATENCY)
    measured: dict[str, list[_Round]] = {BASELINE: [], peers.OURS: []}
    granted: dict[str, float] = {BASELINE: LIFETIME, peers.OURS: LIFETIME}
    renewer = _Renewer(ctx)
    try:
        for round_index in range(rounds):
            for name in rotated([BASELINE, peers.OURS], round_index):
                if name == BASELINE:
                    measured[name].append(renewer.run(ctx, lifetimes))
                else:
                    client_id = ctx.client_id("refresh-ours")
                    ctx.servers.set_lifetime(client_id, LIFETIME)
                    contender = peers.ours(client_id, token_url, expiry_buffer=MARGIN)
                    measured[name].append(_run_one(ctx, contender, lifetimes))
                    contender.close()
                ctx.log(f"  {name}, round {round_index + 1}: {_brief(measured[name][-1])}")
        for name, lifetime, build in peer_builders:
            client_id = ctx.client_id(f"refresh-{name}")
            ctx.servers.set_lifetime(client_id, lifetime)
            contender = build(client_id)
            measured[name] = [_run_one(ctx, contender, peer_lifetimes)]
            contender.close()
            granted[name] = lifetime
            ctx.log(f"  {name}: {_brief(measured[name][0])}")
    finally:
        renewer.close()
        ctx.servers.set_delay(0.0)
    results = {
        name: {**_pooled(done), "granted_lifetime_s": granted[name]} for name, done in measured.items()
    }
    ours, baseline = results[peers.OURS], results[BASELINE]
    machine = baseline["p99_inside_over_outside"]
    ours_net = ratio(ours["p99_inside_over_outside"] or 0.0, machine) if machine else None
    return {
        "workers": WORKERS,
        "rounds": rounds,
        "lifetimes_per_round": lifetimes,
        "peer_lifetimes": peer_lifetimes,
        "lifetime_s": LIFETIME,
        "margin_s": MARGIN,
        "idp_latency_ms": IDP_LATENCY * 1000,
        "think_time_ms": THINK * 1000,
        "contenders": results,
        "ours_p99_ratio_over_baseline_p99_ratio": ours_net,
        "goals": {
            "p99_inside_within_10pct_of_outside": (ours["p99_inside_over_outside"] or 99) <= 1.10,
            "p99_inside_within_10pct_of_outside_net_of_the_machine": (ours_net or 99) <= 1.10,
            "no_caller_waited_on_the_idp": ours["callers_that_waited_on_the_idp"] == 0,
            "one_token_request_per_renewal": ours["token_requests_per_renewal"] == 1.0,
            "no_failed_calls": ours["calls_not_ok"] == 0,
        },
    }
