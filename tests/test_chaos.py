"""Chaos load test: thousands of LiteLLM calls while the token endpoint and the gateway misbehave.

Calls (completion, acompletion, streaming both ways, embeddings both ways) run from worker
threads and asyncio tasks at once, through the plugin, against the loopback token server
(3-second tokens) and gateway. The token server fails requests at random: 503, 429 with
``Retry-After``, delays beyond the provider's ``timeout_seconds``, connection resets; now and
then it is down altogether for a few seconds. The gateway answers 401 to some calls once (the
plugin must recover) and to a few twice (the call must fail).

Asserted, each with a message saying what was lost or leaked:

* no call hangs: every call ends within a bound computed from the retry policy;
* no request reaches the gateway without a valid bearer token (the gateway verifies each one);
* every failed call fails with an error traceable to an injected fault that outlasted the retry
  policy: a token fetch whose every attempt met an injected fault, or two injected 401s;
* token requests stay within a computed bound (single flight and refresh-ahead held);
* no thread or task of the plugin, the test servers or the test is left running.

Size: 300 calls by default (CI), 2,000 with ``pytest --chaos-full``. The seed is random and
printed with every failure; set ``LITELLM_OAUTH2_CHAOS_SEED`` to replay one.
"""

from __future__ import annotations

import asyncio
import math
import os
import queue
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from pydantic import SecretStr

from litellm_oauth2 import OAuth2Handler, find_oauth2_error
from litellm_oauth2.cache import NEGATIVE_CACHE_SECONDS, Lifecycle
from litellm_oauth2.client import Token
from litellm_oauth2.errors import OAuth2AuthenticationError
from litellm_oauth2.hook import OAuth2ProviderError
from litellm_oauth2.testing import OpenAIUpstream, RecordedRequest, TokenServer
from litellm_oauth2.testing._http import Response, json_response

pytestmark = pytest.mark.slow

CI_CALLS, FULL_CALLS = 300, 2000
PROVIDER = "chaos"
TOKEN_LIFETIME = 3.0
TIMEOUT_SECONDS = 0.5  # the provider's timeout_seconds; "slow" faults hold a request 3x longer
SLOW_FAULT_SECONDS = 3 * TIMEOUT_SECONDS
RETRY = {"attempts": 2, "initial_delay": 0.02, "max_delay": 0.1}
ATTEMPTS = RETRY["attempts"] + 1
FAULT_RATE = 0.35  # per token request, outside outages
TOKEN_FAULTS = ("503", "429", "slow", "reset")
OUTAGE_EVERY, OUTAGE_FIRST, OUTAGE_LENGTH = 12.0, 4.0, (1.0, 2.0)  # seconds
REFUSALS = (0.945, 0.04, 0.015)  # per call: the gateway refuses its token never / once / twice
THREADS, TASKS = 6, 12
THINK_SECONDS = 0.03  # a worker's pause between calls, so the run spans several token lifetimes
CALL_OVERHEAD_SECONDS = 12.0  # LiteLLM, two gateway requests and a loaded 2-core machine
SYNC_KINDS = ("completion", "completion stream", "embedding")
ASYNC_KINDS = ("acompletion", "acompletion stream", "aembedding")
EXPECTED_TEXT = "Hello from upstream (client_id=test-client)"
# Threads that may outlive the run: idle workers of LiteLLM's own logging pool.
ALLOWED_THREADS = re.compile(r"^litellm-logging_\d+$")
# Tasks that may outlive the run: LiteLLM's logging worker, which lives as long as its loop.
ALLOWED_TASKS = ("LoggingWorker._worker_loop",)


@pytest.fixture
def calls(request: pytest.FixtureRequest) -> int:
    return FULL_CALLS if request.config.getoption("--chaos-full") else CI_CALLS


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("LITELLM_OAUTH2_CHAOS_SEED") or random.SystemRandom().randrange(2**32))


# -- the misbehaving servers ---------------------------------------------------------------------


@dataclass
class TokenRequest:
    index: int
    arrived: float
    fault: str | None  # None: served normally


class ChaosTokenServer(TokenServer):
    """Fails ``/token`` requests at random, and always during scheduled outages; logs every one."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__(token_lifetime=TOKEN_LIFETIME, key_type="EC")
        self.rng = rng
        self.log: list[TokenRequest] = []
        self.started = time.monotonic()
        self._chaos_lock = threading.Lock()

    def in_outage(self, at: float) -> bool:
        since = at - self.started - OUTAGE_FIRST
        if since < 0:
            return False
        cycle = int(since // OUTAGE_EVERY)
        length = random.Random(cycle).uniform(*OUTAGE_LENGTH)
        return since - cycle * OUTAGE_EVERY < length

    def respond(self, request: RecordedRequest) -> Response:
        if urlsplit(request.path).path != "/token":
            return super().respond(request)
        with self._chaos_lock:
            now = time.monotonic()
            faulty = self.in_outage(now) or self.rng.random() < FAULT_RATE
            fault = self.rng.choice(TOKEN_FAULTS) if faulty else None
            entry = TokenRequest(len(self.log), now, fault)
            self.log.append(entry)
            retry_after = self.rng.choice(["0", "1", "30", "soon"])
        description = f"chaos fault {entry.index}"
        if fault == "503":
            return json_response(503, {"error": "temporarily_unavailable", "error_description": description})
        if fault == "429":
            return json_response(
                429, {"error": "slow_down", "error_description": description}, {"Retry-After": retry_after}
            )
        if fault == "reset":
            return Response(0, reset=True)
        if fault == "slow":
            self.sleep(SLOW_FAULT_SECONDS)  # the client has given up by then
        return super().respond(request)


class ChaosUpstream(OpenAIUpstream):
    """Answers 401 to the first ``plan[call]`` requests of a call (after checking its token)."""

    def __init__(self, token_server: TokenServer, plan: dict[int, int]) -> None:
        super().__init__(token_server)
        self.plan = plan
        self.refused: Counter[int] = Counter()
        self.by_call: dict[int, list[str]] = {}
        self._chaos_lock = threading.Lock()

    def respond(self, request: RecordedRequest) -> Response:
        response = super().respond(request)  # verifies the bearer token, records the request
        call = call_id(request)
        if call is None:
            return response
        with self._chaos_lock:
            refuse = self.refused[call] < self.plan.get(call, 0)
            if refuse:
                self.refused[call] += 1
            outcome = f"injected 401 #{self.refused[call]}" if refuse else str(response.status)
            self.by_call.setdefault(call, []).append(outcome)
        if not refuse:
            return response
        message = f"chaos 401 #{self.refused[call]} for call {call}"
        body = {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_token"}}
        return json_response(401, body, {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def call_id(request: RecordedRequest) -> int | None:
    body = request.json if isinstance(request.json, dict) else {}
    texts = [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
    inputs = body.get("input")
    texts += inputs if isinstance(inputs, list) else [inputs]
    for text in texts:
        match = re.fullmatch(r"chaos call (\d+)", str(text))
        if match:
            return int(match.group(1))
    return None


# -- the calls -----------------------------------------------------------------------------------


@dataclass
class Call:
    index: int
    kind: str
    planned_401s: int
    started: float = math.nan
    ended: float = math.nan
    error: BaseException | None = None
    result: str = ""

    @property
    def duration(self) -> float:
        return self.ended - self.started


def sync_call(call: Call) -> str:
    messages = [{"role": "user", "content": f"chaos call {call.index}"}]
    if call.kind == "completion":
        return str(litellm.completion(model=f"{PROVIDER}/chat", messages=messages).choices[0].message.content)
    if call.kind == "completion stream":
        stream = litellm.completion(model=f"{PROVIDER}/chat", messages=messages, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    response = litellm.embedding(model=f"{PROVIDER}/embed", input=[f"chaos call {call.index}"])
    return f"{len(response.data)} embedding"


async def async_call(call: Call) -> str:
    messages = [{"role": "user", "content": f"chaos call {call.index}"}]
    if call.kind == "acompletion":
        response = await litellm.acompletion(model=f"{PROVIDER}/chat", messages=messages)
        return str(response.choices[0].message.content)
    if call.kind == "acompletion stream":
        stream = await litellm.acompletion(model=f"{PROVIDER}/chat", messages=messages, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    response = await litellm.aembedding(model=f"{PROVIDER}/embed", input=[f"chaos call {call.index}"])
    return f"{len(response.data)} embedding"


def expected_result(call: Call) -> str:
    return "1 embedding" if "embed" in call.kind else EXPECTED_TEXT


@dataclass
class Run:
    calls: list[Call]
    seed: int
    stuck: list[Call] = field(default_factory=list)
    leftover_tasks: list[str] = field(default_factory=list)
    duration: float = 0.0


def run_calls(plan: list[Call], seed: int, bound: float) -> Run:
    """Sync calls from THREADS threads while TASKS tasks run the async ones; stuck calls are reported."""
    run = Run(plan, seed)
    pending: queue.Queue[Call] = queue.Queue()
    for call in plan:
        if call.kind in SYNC_KINDS:
            pending.put(call)
    pace = random.Random(seed + 1)

    def worker() -> None:
        while True:
            try:
                call = pending.get_nowait()
            except queue.Empty:
                return
            time.sleep(pace.uniform(0, THINK_SECONDS))
            call.started = time.monotonic()
            try:
                call.result = sync_call(call)
            except Exception as exc:
                call.error = exc
            call.ended = time.monotonic()

    async def tasks() -> None:
        gate = asyncio.Semaphore(TASKS)

        async def one(call: Call) -> None:
            async with gate:
                await asyncio.sleep(pace.uniform(0, THINK_SECONDS))
                call.started = time.monotonic()
                try:
                    call.result = await async_call(call)
                except Exception as exc:
                    call.error = exc
                call.ended = time.monotonic()

        jobs = [asyncio.create_task(one(call)) for call in plan if call.kind in ASYNC_KINDS]
        overall = bound * (len(jobs) / TASKS + 1)
        await asyncio.wait(jobs, timeout=overall)
        # LiteLLM finishes its logging in tasks of its own: give them a moment, then list what remains.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and t not in jobs]
        allowed = [t for t in others if any(name in repr(t.get_coro()) for name in ALLOWED_TASKS)]
        rest = [t for t in others if t not in allowed]
        if rest:
            await asyncio.wait(rest, timeout=10)
        run.leftover_tasks = [repr(t.get_coro()) for t in rest if not t.done()]

    started = time.monotonic()
    threads = [threading.Thread(target=worker, name=f"chaos-worker-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    sync_count = sum(call.kind in SYNC_KINDS for call in plan)
    deadline = time.monotonic() + bound * (sync_count / THREADS + 1)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    run.duration = time.monotonic() - started
    run.stuck = [call for call in plan if math.isnan(call.ended)]
    return run


# -- tracing failures back to injected faults ----------------------------------------------------


@dataclass
class Fetch:
    """Consecutive token requests of one fetch (fetches of one provider never overlap)."""

    requests: list[TokenRequest]

    @property
    def failed(self) -> bool:
        return len(self.requests) == ATTEMPTS and all(r.fault for r in self.requests)

    @property
    def last(self) -> TokenRequest:
        return self.requests[-1]


def fetches_of(log: list[TokenRequest]) -> list[Fetch]:
    """Split the token server's log into fetches: up to ATTEMPTS faults, ended early by a success."""
    fetches, current = [], []
    for entry in log:
        current.append(entry)
        if entry.fault is None or len(current) == ATTEMPTS:
            fetches.append(Fetch(current))
            current = []
    if current:
        fetches.append(Fetch(current))
    return fetches


def fault_kind(message: str) -> str | None:
    if "answered HTTP 503" in message:
        return "503"
    if "answered HTTP 429" in message:
        return "429"
    if "timed out" in message:
        return "slow"
    if "could not reach" in message or "closed the connection" in message:
        return "reset"
    return None


def trace_failures(run: Run, log: list[TokenRequest], upstream: ChaosUpstream) -> tuple[list[str], int]:
    """Why each failed call failed; returns the untraceable ones and the number of failed fetches seen."""
    fetches = fetches_of(log)
    by_index = {r.index: fetch for fetch in fetches for r in fetch.requests}
    failed_fetches = [fetch for fetch in fetches if fetch.failed]
    claimed: dict[int, int] = {}  # id(fetch error) -> index of the failed fetch it is traced to
    errors_seen: dict[int, tuple[BaseException, float]] = {}
    untraceable: list[str] = []
    for call in sorted((c for c in run.calls if c.error is not None), key=lambda c: c.ended):
        error = call.error
        assert error is not None
        oauth = find_oauth2_error(error)
        text = f"call {call.index} ({call.kind}): {type(error).__name__}: {str(error)[:300]}"
        if oauth is None:
            history = upstream.by_call.get(call.index, [])
            refused_twice = call.planned_401s == 2 and history[:2] == ["injected 401 #1", "injected 401 #2"]
            if getattr(error, "status_code", None) == 401 and refused_twice and "chaos 401 #2" in str(error):
                continue
            untraceable.append(f"{text} [gateway saw {history}]")
            continue
        cause = oauth.__cause__ if isinstance(oauth, OAuth2ProviderError) else oauth
        if not isinstance(cause, OAuth2AuthenticationError):
            untraceable.append(f"{text} [not a token fetch failure]")
            continue
        message = cause.message
        if f"gave up after {ATTEMPTS} attempts" not in message:
            untraceable.append(f"{text} [the retry policy did not run out: {message}]")
            continue
        errors_seen.setdefault(id(cause), (cause, call.ended))
    # Each distinct fetch failure must be one failed fetch in the server's log, in time order.
    for key, (cause, seen_at) in sorted(errors_seen.items(), key=lambda item: item[1][1]):
        kind = fault_kind(cause.message)
        match = re.search(r"chaos fault (\d+)", cause.message)
        if match:
            fetch = by_index.get(int(match.group(1)))
            ok = fetch is not None and fetch.failed and fetch.last.index == int(match.group(1))
            candidates = [fetch] if ok and fetch is not None else []
        else:
            candidates = [
                f
                for f in failed_fetches
                if f.last.fault == kind and f.last.arrived <= seen_at and id(f) not in claimed.values()
            ]
        if not candidates:
            untraceable.append(
                f"fetch failure {cause.message!r}: no failed fetch with {kind!r} faults matches it"
            )
            continue
        claimed[key] = id(candidates[-1])
    return untraceable, len(failed_fetches)


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture
def quiet_litellm() -> Iterator[None]:
    saved = litellm.suppress_debug_info
    litellm.suppress_debug_info = True
    yield
    litellm.suppress_debug_info = saved


@pytest.mark.timeout(3600)
def test_chaos(calls: int, seed: int, quiet_litellm: None, record_property: Any) -> None:
    rng = random.Random(seed)
    plan = [
        Call(i, rng.choice(SYNC_KINDS + ASYNC_KINDS), rng.choices([0, 1, 2], REFUSALS)[0])
        for i in range(calls)
    ]
    fetch_bound = ATTEMPTS * TIMEOUT_SECONDS + RETRY["attempts"] * RETRY["max_delay"]
    # A call waits for at most one fetch before its first gateway request and one after a 401.
    call_bound = 2 * fetch_bound + CALL_OVERHEAD_SECONDS
    threads_before = set(threading.enumerate())
    where = f"[seed {seed}, {calls} calls]"

    token_server = ChaosTokenServer(random.Random(seed + 2))
    token_server.add_client("test-client", SECRET)
    with token_server, ChaosUpstream(token_server, {c.index: c.planned_401s for c in plan}) as upstream:
        settings = provider_dict(
            token_server.token_url, api_base=upstream.base_url, retry=RETRY, timeout_seconds=TIMEOUT_SECONDS
        )
        handler = OAuth2Handler(config=config_of({PROVIDER: settings}))
        try:
            token_server.started = time.monotonic()
            run = run_calls(plan, seed, call_bound)
            stats = handler.cache.stats(PROVIDER)
        finally:
            handler.close()
        log = list(token_server.log)
        issued = set(token_server.issued_tokens)
        recorded = upstream.recorded
        unauthorized = upstream.unauthorized_requests

    # -- no call hangs -------------------------------------------------------------------------
    assert not run.stuck, (
        f"{where} {len(run.stuck)} calls never finished (hung beyond {call_bound:.1f} s each): "
        f"{[(c.index, c.kind) for c in run.stuck[:10]]}"
    )
    slowest = max(run.calls, key=lambda c: c.duration)
    assert slowest.duration <= call_bound, (
        f"{where} call {slowest.index} ({slowest.kind}) took {slowest.duration:.1f} s, beyond the bound "
        f"{call_bound:.1f} s: a caller was held although the retry policy had given up"
    )

    # -- every gateway request carried a valid bearer token ------------------------------------
    assert unauthorized == 0, (
        f"{where} {unauthorized} requests reached the gateway without a valid bearer token "
        "(missing, expired or not issued by the token server)"
    )
    foreign = [
        r.path for r in recorded if r.headers.get("authorization", "").removeprefix("Bearer ") not in issued
    ]
    assert not foreign, (
        f"{where} {len(foreign)} gateway requests carried a token the server never issued: {foreign[:5]}"
    )

    # -- calls that succeeded got the right answer; failed ones are traceable ------------------
    wrong = [
        (c.index, c.kind, c.result[:60])
        for c in run.calls
        if c.error is None and c.result != expected_result(c)
    ]
    assert not wrong, (
        f"{where} {len(wrong)} calls returned something else than the gateway's answer: {wrong[:5]}"
    )
    untraceable, failed_fetches = trace_failures(run, log, upstream)
    assert not untraceable, (
        f"{where} {len(untraceable)} failures (of a call, or of a token fetch shared by waiting calls) are not "
        f"traceable to an injected fault that outlasted the retry policy: calls were lost: {untraceable[:5]}"
    )
    assert stats.fetch_failures == failed_fetches, (
        f"{where} the plugin counted {stats.fetch_failures} failed fetches but the token server's log shows "
        f"{failed_fetches} fetches whose every attempt was faulted: a healthy token request failed, "
        "or a fault was lost"
    )

    # -- token requests within the bound -------------------------------------------------------
    refresh_after = refresh_interval(handler.config.provider(PROVIDER).expiry_buffer_seconds)
    injected_401s = sum(upstream.refused.values())
    faults = [r for r in log if r.fault]
    successful = len(log) - len(faults)
    success_bound = 1 + injected_401s + math.ceil(run.duration / refresh_after)
    assert successful <= success_bound, (
        f"{where} {successful} successful token requests in {run.duration:.1f} s, beyond the bound "
        f"{success_bound} (one per {refresh_after:.2f} s refresh interval, plus one per injected 401): "
        "single flight or refresh-ahead was lost"
    )
    failed_bound = (
        1
        + math.ceil(run.duration / NEGATIVE_CACHE_SECONDS)
        + success_bound * math.ceil(math.log2(TOKEN_LIFETIME / (RETRY["initial_delay"] * 3)) + 1)
    )
    assert failed_fetches <= failed_bound, (
        f"{where} {failed_fetches} failed fetches, beyond the bound {failed_bound}: the endpoint was hammered"
    )

    # -- nothing left running ------------------------------------------------------------------
    assert not run.leftover_tasks, (
        f"{where} asyncio tasks left running after the calls: {run.leftover_tasks[:5]}"
    )
    grace = time.monotonic() + 10
    while time.monotonic() < grace:
        left = [
            t
            for t in set(threading.enumerate()) - threads_before
            if t.is_alive() and not ALLOWED_THREADS.match(t.name)
        ]
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"{where} threads left running after the run: {sorted(t.name for t in left)}"

    # -- the figures ---------------------------------------------------------------------------
    failed_calls = [c for c in run.calls if c.error is not None]
    lost_to_faults = sum(len(f.requests) for f in fetches_of(log) if f.failed)
    figures = {
        "seed": seed,
        "calls": calls,
        "calls by kind": dict(Counter(c.kind for c in run.calls)),
        "duration s": round(run.duration, 1),
        "token requests": len(log),
        "token faults injected": dict(Counter(r.fault for r in faults)),
        "gateway 401s injected": injected_401s,
        "faults injected": len(faults) + injected_401s,
        "faults survived": (len(faults) - lost_to_faults)
        + sum(survived_401s(history) for history in upstream.by_call.values()),
        "failed fetches": failed_fetches,
        "calls failed": len(failed_calls),
        "calls failed by cause": dict(Counter(fault_kind(str(c.error)) or "two 401s" for c in failed_calls)),
        "background refreshes": stats.background_refreshes,
        "slowest call s": round(slowest.duration, 2),
        "call bound s": round(call_bound, 1),
    }
    record_property("chaos", figures)
    print(f"\nchaos figures: {figures}")


def refresh_interval(expiry_buffer_seconds: float) -> float:
    """Seconds from obtaining a token to starting its refresh, by the cache's own rule."""
    token = Token(SecretStr("x"), "Bearer", TOKEN_LIFETIME, TOKEN_LIFETIME, TOKEN_LIFETIME)
    return Lifecycle.of(token, expiry_buffer_seconds).refresh_at


def survived_401s(history: list[str]) -> int:
    """Injected 401s that the plugin's one retry got past (another gateway request followed)."""
    return sum(1 for i, outcome in enumerate(history[:-1]) if outcome.startswith("injected"))
