"""Chaos load test: thousands of LiteLLM calls while the token endpoint and the gateway misbehave.

Calls (completion, acompletion, streaming both ways, embeddings both ways) run from worker
threads and asyncio tasks at once, through the plugin, against the loopback token server
(3-second tokens) and gateway. The token server fails requests at random: 503, 429 with
``Retry-After``, delays beyond the provider's ``timeout_seconds``, connection resets; now and
then it is down altogether for a few seconds. The gateway answers 401 to some calls once (the
plugin must recover) and to a few twice (the call must fail). A share of the asyncio calls is
cancelled while it waits (``asyncio.wait_for`` with a short timeout, or ``Task.cancel()``,
several of them while they wait for a token fetch in flight). A few times during the run the test
forks (``os.fork()``, from a thread making no call; once while a token fetch is in flight) a
child that makes two calls through the handler it inherited and reports them through a pipe.

Asserted, each with a message saying what was lost or leaked:

* no call hangs: every call ends within a bound computed from the retry policy;
* no request reaches the gateway without a valid bearer token (the gateway verifies each one);
* every failed call fails with an error traceable to an injected fault that outlasted the retry
  policy: a token fetch whose every attempt met an injected fault, or two injected 401s;
* token requests stay within a computed bound (single flight and refresh-ahead held);
* a cancellation affects only the cancelled call: every other call still succeeds or fails by an
  injected fault, and no fetch fails without one;
* every forked child finishes within a bound (it is killed otherwise) and its calls succeed, or
  fail by a token fetch whose every attempt met an injected fault;
* no thread or task of the plugin, the test servers or the test is left running.

Size: 300 calls and 3 forks by default (CI), 2,000 calls and 10 forks with
``pytest --chaos-full``. The seed is random and printed with every failure; set
``LITELLM_OAUTH2_CHAOS_SEED`` to replay one.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import math
import os
import queue
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from pydantic import SecretStr

from litellm_oauth2 import OAuth2Handler, find_oauth2_error
from litellm_oauth2 import cache as cache_module
from litellm_oauth2.cache import NEGATIVE_CACHE_SECONDS, Lifecycle, max_fetch_seconds
from litellm_oauth2.client import Token
from litellm_oauth2.errors import OAuth2AuthenticationError
from litellm_oauth2.provider import OAuth2ProviderError
from litellm_oauth2.testing import OpenAIUpstream, RecordedRequest, TokenServer
from litellm_oauth2.testing._http import Response, json_response

pytestmark = pytest.mark.slow

CI_CALLS, FULL_CALLS = 300, 2000
CI_FORKS, FULL_FORKS = 3, 10
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
# Cancellations, of asyncio calls only: a share of them is cancelled after a random wait, or as soon
# as it is seen waiting for a token fetch; the first few async calls of the plan are always of the
# second kind, and the first token request is held a while, so some cancellations hit the cold start.
CANCEL_RATE = 0.15
CANCEL_WITHIN = (0.001, 0.25)  # seconds: wait_for's timeout, or the moment of Task.cancel()
FIRST_CANCELLED_AT_FETCH = 3
# The first token request, and this process's while a fork waits for a fetch in flight, are held
# until the fork is done and a call was cancelled while waiting for it, at most this long (half
# timeout_seconds: held, they still succeed).
COLD_START_HOLD = 0.25
HELD_ANSWER_WITHIN = COLD_START_HOLD + 0.05
# Forks: a child makes these calls through the handler it inherited, numbered from CHILD_CALLS_FROM.
CHILD_KINDS = ("completion", "embedding")
CHILD_CALLS_FROM = 1_000_000
FORK_WAITS_FOR_FETCH = 1.0  # seconds
EXPECTED_TEXT = "Hello from upstream (client_id=test-client)"
# Threads that may outlive the run: idle workers of LiteLLM's own logging pool.
ALLOWED_THREADS = re.compile(r"^litellm-logging_\d+$")
# Tasks that may outlive the run: LiteLLM's logging worker, which lives as long as its loop.
ALLOWED_TASKS = ("LoggingWorker._worker_loop",)
CACHE_FILE = cache_module.__file__
FRAME_OF = ("cr_frame", "gi_frame", "ag_frame")
AWAITED_BY = ("cr_await", "gi_yieldfrom", "ag_await")
QUIET_SECONDS = 1.0  # how long calls are held back while a fork waits for every call to wait in the cache


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
    pid: int = 0  # 0: this process; else the forked child that sent it (-1: one that has exited)


class ChaosTokenServer(TokenServer):
    """Fails ``/token`` requests at random, and always during scheduled outages; logs every one.

    Requests from forked children are told apart by their connection: its socket is not one of
    this process's (a child's new connections are its own; the ones it inherited are ours too).
    """

    def __init__(self, rng: random.Random) -> None:
        super().__init__(token_lifetime=TOKEN_LIFETIME, key_type="EC")
        self.rng = rng
        self.log: list[TokenRequest] = []
        self.started = time.monotonic()
        self.children: set[int] = set()
        self.in_progress: list[TokenRequest] = []
        self.hold = False  # while set, this process's token requests are held (COLD_START_HOLD)
        # Together they end the holds: a fork is done, a call was cancelled while waiting for a fetch.
        self.forked = threading.Event()
        self.cancelled_at_fetch = threading.Event()
        self._chaos_lock = threading.Lock()

    def in_outage(self, at: float) -> bool:
        since = at - self.started - OUTAGE_FIRST
        if since < 0:
            return False
        cycle = int(since // OUTAGE_EVERY)
        length = random.Random(cycle).uniform(*OUTAGE_LENGTH)
        return since - cycle * OUTAGE_EVERY < length

    def fetch_in_flight(self) -> bool:
        """Whether this process is waiting for a token request now (one the client has not given up on)."""
        now = time.monotonic()
        with self._chaos_lock:
            return any(r.pid == 0 and now - r.arrived < 0.8 * COLD_START_HOLD for r in self.in_progress)

    def respond(self, request: RecordedRequest) -> Response:
        if urlsplit(request.path).path != "/token":
            return super().respond(request)
        pid = self.sender_pid()
        with self._chaos_lock:
            now = time.monotonic()
            faulty = self.in_outage(now) or self.rng.random() < FAULT_RATE
            fault = self.rng.choice(TOKEN_FAULTS) if faulty else None
            if pid < 0:
                # The sender's socket is gone before the answer starts: on a loaded machine, this
                # process's own request that its client already timed out on. A timeout for it.
                fault = "slow"
            entry = TokenRequest(len(self.log), now, fault, pid)
            self.log.append(entry)
            self.in_progress.append(entry)
            retry_after = self.rng.choice(["0", "1", "30", "soon"])
        try:
            if entry.index == 0 or (self.hold and pid == 0):
                until = entry.arrived + COLD_START_HOLD  # callers pile up on the fetch
                self.forked.wait(max(0.0, until - time.monotonic()))
                self.cancelled_at_fetch.wait(max(0.0, until - time.monotonic()))
                if time.monotonic() - entry.arrived > HELD_ANSWER_WITHIN:
                    # Held too long (a loaded machine, a fork) for the client to surely see an
                    # answer in time: make it a clean timeout, logged as the fault it is.
                    with self._chaos_lock:
                        entry.fault = "slow"
            return self.answer(request, entry, retry_after)
        finally:
            with self._chaos_lock:
                self.in_progress.remove(entry)

    def answer(self, request: RecordedRequest, entry: TokenRequest, retry_after: str) -> Response:
        fault = entry.fault
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

    def sender_pid(self) -> int:
        """0 when this process sent the request being answered, else the pid of the child that did."""
        frame = sys._getframe(1)
        while frame is not None and not isinstance(frame.f_locals.get("self"), BaseHTTPRequestHandler):
            frame = frame.f_back
        if frame is None:
            return 0
        port = frame.f_locals["self"].client_address[1]
        inode = socket_inode(port, self.port_number)
        if inode is not None and inode in socket_inodes(os.getpid()):
            return 0
        for child in list(self.children):
            if inode is not None and inode in socket_inodes(child):
                return child
        return -1  # a child that has exited since: its background refresh was still on the way

    @property
    def port_number(self) -> int:
        return int(urlsplit(self.url).port or 0)


def socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the loopback TCP socket from ``local_port`` to ``remote_port`` (Linux /proc)."""
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local, remote = fields[1].split(":"), fields[2].split(":")
            if int(local[1], 16) == local_port and int(remote[1], 16) == remote_port:
                return fields[9]
    return None


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process ``pid`` has open."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


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
    cancel: str | None = None  # "wait_for" or "cancel" (asyncio calls only); None: left alone
    cancel_after: float = 0.0
    started: float = math.nan
    ended: float = math.nan
    error: BaseException | None = None
    result: str = ""
    cancelled: bool = False  # the cancellation reached the call before it ended
    cancelled_at_fetch: bool = False  # ... while the call waited for a token fetch

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
    children: list[Child] = field(default_factory=list)
    forks_skipped: int = 0


@dataclass
class Child:
    """A forked child: when, whether a token fetch was in flight, and what its calls reported."""

    pid: int
    during_fetch: bool
    first_call: int
    reports: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""  # hung, crashed, or sent nothing
    seconds: float = 0.0


def waiting_for_token(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is suspended in the token cache, waiting for a fetch in flight.

    Follows what each coroutine awaits, through async generators too (an ``asend`` awaitable
    shows its generator only to the garbage collector).
    """
    awaited: Any = task.get_coro()
    for _ in range(1000):
        if awaited is None:
            break
        frame = next((getattr(awaited, a) for a in FRAME_OF if getattr(awaited, a, None) is not None), None)
        if frame is not None and frame.f_code.co_name == "_await" and frame.f_code.co_filename == CACHE_FILE:
            return True
        awaited = next(
            (getattr(awaited, a) for a in AWAITED_BY if getattr(awaited, a, None) is not None), None
        ) or (
            next((r for r in gc.get_referents(awaited) if inspect.isasyncgen(r)), None)
            if type(awaited).__name__ == "async_generator_asend"
            else None
        )
    return False


async def cancellable_call(call: Call, forker: Forker) -> str:
    """``async_call``, cancelled as ``call.cancel`` says; ``call.cancelled`` records whether it was."""
    active = forker.active_tasks
    inner = active[call.index] = asyncio.create_task(async_call(call))
    try:
        if call.cancel == "wait_for":
            try:
                return await asyncio.wait_for(inner, call.cancel_after)
            except TimeoutError:
                call.cancelled = True
                raise
        if call.cancel == "cancel":
            deadline = time.monotonic() + call.cancel_after
            while not inner.done():
                at_fetch = waiting_for_token(inner)
                if at_fetch or time.monotonic() >= deadline:
                    call.cancelled_at_fetch = at_fetch
                    inner.cancel()
                    if at_fetch:
                        forker.token_server.cancelled_at_fetch.set()
                    break
                await asyncio.wait([inner], timeout=0.002)
        try:
            return await inner
        except asyncio.CancelledError:
            call.cancelled = call.cancel == "cancel"
            raise
    finally:
        del active[call.index]


def run_calls(plan: list[Call], seed: int, bound: float, forker: Forker) -> Run:
    """Sync calls from THREADS threads while TASKS tasks run the async ones and ``forker`` forks;
    stuck calls are reported."""
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
            forker.calls_may_start.wait(bound)
            forker.active_threads.add(threading.get_ident())
            call.started = time.monotonic()
            try:
                call.result = sync_call(call)
            except (Exception, asyncio.CancelledError) as exc:
                call.error = exc
            call.ended = time.monotonic()
            forker.active_threads.discard(threading.get_ident())

    async def tasks() -> None:
        gate = asyncio.Semaphore(TASKS)

        async def one(call: Call) -> None:
            async with gate:
                await asyncio.sleep(pace.uniform(0, THINK_SECONDS))
                until = time.monotonic() + bound
                while not forker.calls_may_start.is_set() and time.monotonic() < until:
                    await asyncio.sleep(0.005)
                call.started = time.monotonic()
                try:
                    call.result = await cancellable_call(call, forker)
                except (Exception, asyncio.CancelledError) as exc:
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
    threads.append(threading.Thread(target=forker.run, name="chaos-forker"))
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    sync_count = sum(call.kind in SYNC_KINDS for call in plan)
    deadline = time.monotonic() + max(bound * (sync_count / THREADS + 1), forker.bound * len(forker.at))
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    run.duration = time.monotonic() - started
    run.stuck = [call for call in plan if math.isnan(call.ended)]
    run.children = list(forker.children)
    run.forks_skipped = forker.skipped
    return run


# -- forks ---------------------------------------------------------------------------------------


class Forker:
    """Forks a child at each of ``at`` (seconds into the run), the first while a token fetch is in flight.

    The child makes CHILD_KINDS calls through the handler it inherited, writes what they returned
    to a pipe and leaves with ``os._exit``: it never returns into pytest. The parent waits for it
    at most ``bound`` seconds, then kills it.
    """

    def __init__(self, token_server: ChaosTokenServer, at: list[float], bound: float) -> None:
        self.token_server = token_server
        self.at = at
        self.bound = bound
        self.children: list[Child] = []
        self.skipped = 0  # forks given up: no quiet moment within the bound
        # Calls start only while this is set; the calls in progress, by thread and by task.
        self.calls_may_start = threading.Event()
        self.calls_may_start.set()
        self.active_threads: set[int] = set()
        self.active_tasks: dict[int, asyncio.Task[str]] = {}

    def run(self) -> None:
        started = time.monotonic()
        for k, at in enumerate(self.at):
            time.sleep(max(0.0, started + at - time.monotonic()))
            # The first fork must meet a token fetch in flight: it tries until one does, holding
            # this process's token requests a while meanwhile. The others take a fetch in flight
            # if one comes within FORK_WAITS_FOR_FETCH, and fork without one otherwise.
            need_fetch = k == 0
            self.token_server.hold = need_fetch
            until = time.monotonic() + (self.bound if need_fetch else FORK_WAITS_FOR_FETCH)
            while True:
                while not self.token_server.fetch_in_flight() and time.monotonic() < until:
                    time.sleep(0.001)
                if need_fetch:  # calls held back now would miss the cancellations at the cold start
                    self.token_server.cancelled_at_fetch.wait(COLD_START_HOLD)
                self.calls_may_start.clear()
                try:
                    if self.quiet(need_fetch=need_fetch):
                        self.token_server.hold = False
                        during_fetch = self.token_server.fetch_in_flight()
                        self.children.append(self.fork(CHILD_CALLS_FROM + 10 * k, during_fetch))
                        break
                finally:
                    self.calls_may_start.set()
                if time.monotonic() >= until:
                    self.skipped += 1
                    break
            self.token_server.hold = False

    def quiet(self, *, need_fetch: bool) -> bool:
        """Wait until every call in progress waits in the token cache (or has ended).

        A thread inside LiteLLM at the moment of the fork may hold one of its locks (an import
        lock, its logging executor's), which the child inherits held: LiteLLM does not reset them.
        The plugin's own locks, flights and connections are what the fork must meet.
        """
        until = time.monotonic() + QUIET_SECONDS
        while time.monotonic() < until:
            frames = sys._current_frames()
            threads_parked = all(
                ident not in frames or in_token_cache(frames[ident]) for ident in list(self.active_threads)
            )
            tasks_parked = all(waiting_for_token(task) for task in list(self.active_tasks.values()))
            if threads_parked and tasks_parked and (not need_fetch or self.token_server.fetch_in_flight()):
                return True
            time.sleep(0.002)
        return False

    def fork(self, first_call: int, during_fetch: bool) -> Child:
        go_read, go_write = os.pipe()
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.close(result_read)
            child_process(go_read, result_write, first_call)
        self.token_server.forked.set()
        os.close(go_read)
        os.close(result_write)
        child = Child(pid, during_fetch, first_call)
        self.token_server.children.add(pid)  # before the child may send anything
        started = time.monotonic()
        os.write(go_write, b"go")
        os.close(go_write)
        chunks = []
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if status:
                        child.problem = f"exited with status {status}"
                    break
                if time.monotonic() - started > self.bound:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    child.problem = f"hung: killed after {self.bound:.0f} s"
                    break
                time.sleep(0.01)
            child.seconds = time.monotonic() - started
            while chunk := os.read(result_read, 65536):
                chunks.append(chunk)
        finally:
            os.close(result_read)
        if not child.problem:
            try:
                child.reports = json.loads(b"".join(chunks))
            except ValueError:
                child.problem = f"sent no report: {b''.join(chunks)[:200]!r}"
        return child


def child_process(go: int, result: int, first_call: int) -> None:
    """In the forked child: the calls, their outcomes down the pipe, and out (never back into pytest)."""
    code = 0
    try:
        os.read(go, 2)  # the parent knows this pid now
        reports = []
        for k, kind in enumerate(CHILD_KINDS):
            call = Call(first_call + k, kind, 0)
            try:
                reports.append({"call": call.index, "kind": kind, "result": sync_call(call)})
            except BaseException as exc:
                oauth = find_oauth2_error(exc)
                cause = oauth.__cause__ if isinstance(oauth, OAuth2ProviderError) else oauth
                reports.append(
                    {
                        "call": call.index,
                        "kind": kind,
                        "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                        "fetch_failure": cause.message
                        if isinstance(cause, OAuth2AuthenticationError)
                        else None,
                    }
                )
        os.write(result, json.dumps(reports).encode())
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def in_token_cache(frame: Any) -> bool:
    """Whether a thread, from its innermost ``frame``, waits for a token fetch or makes one."""
    while frame is not None:
        if frame.f_code.co_filename == CACHE_FILE and frame.f_code.co_name in ("_wait", "_run_flight"):
            return True
        frame = frame.f_back
    return False


def untraceable_child_failures(child: Child, log: list[TokenRequest]) -> list[str]:
    """A child's failed calls not explained by a fetch of its own whose every attempt met a fault."""
    own = [r for r in log if r.pid == child.pid]
    failed_kinds = {f.last.fault for f in fetches_of(own) if f.failed}
    found = []
    for report in child.reports:
        if "error" not in report:
            wanted = "1 embedding" if report["kind"] == "embedding" else EXPECTED_TEXT
            if report["result"] != wanted:
                found.append(f"child {child.pid} call {report['call']} returned {report['result'][:60]!r}")
            continue
        message = report["fetch_failure"] or ""
        if f"gave up after {ATTEMPTS} attempts" not in message or fault_kind(message) not in failed_kinds:
            found.append(
                f"child {child.pid} call {report['call']} ({report['kind']}): {report['error'][:300]} "
                f"[its token requests: {[(r.index, r.fault) for r in own]}]"
            )
    return found


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
    failed = (c for c in run.calls if c.error is not None and not c.cancelled)
    for call in sorted(failed, key=lambda c: c.ended):
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
@pytest.mark.skipif(
    not os.path.exists("/proc/net/tcp"), reason="tells forked children apart through Linux /proc"
)
def test_chaos(calls: int, seed: int, quiet_litellm: None, record_property: Any) -> None:
    rng = random.Random(seed)
    plan = [
        Call(i, rng.choice(SYNC_KINDS + ASYNC_KINDS), rng.choices([0, 1, 2], REFUSALS)[0])
        for i in range(calls)
    ]
    for k, call in enumerate(c for c in plan if c.kind in ASYNC_KINDS):
        if k < FIRST_CANCELLED_AT_FETCH:  # at the cold start, cancelled as soon as seen waiting
            call.cancel, call.cancel_after = "cancel", 2 * COLD_START_HOLD
        elif rng.random() < CANCEL_RATE:
            call.cancel, call.cancel_after = rng.choice(("wait_for", "cancel")), rng.uniform(*CANCEL_WITHIN)
    forks = FULL_FORKS if calls == FULL_CALLS else CI_FORKS
    fork_at = [0.0, *sorted(rng.uniform(0.5, calls / 60) for _ in range(forks - 1))]
    fetch_bound = ATTEMPTS * TIMEOUT_SECONDS + RETRY["attempts"] * RETRY["max_delay"]
    # A call waits for at most one fetch before its first gateway request and one after a 401.
    call_bound = 2 * fetch_bound + CALL_OVERHEAD_SECONDS
    # A child makes its calls one after the other, after starting up on a loaded machine.
    child_bound = len(CHILD_KINDS) * call_bound + CALL_OVERHEAD_SECONDS
    threads_before = set(threading.enumerate())
    where = f"[seed {seed}, {calls} calls]"
    warm_up()

    token_server = ChaosTokenServer(random.Random(seed + 2))
    token_server.add_client("test-client", SECRET)
    with token_server, ChaosUpstream(token_server, {c.index: c.planned_401s for c in plan}) as upstream:
        settings = provider_dict(
            token_server.token_url, api_base=upstream.base_url, retry=RETRY, timeout_seconds=TIMEOUT_SECONDS
        )
        handler = OAuth2Handler(config=config_of({PROVIDER: settings}))
        try:
            token_server.started = time.monotonic()
            run = run_calls(plan, seed, call_bound, Forker(token_server, fork_at, child_bound))
            # A background refresh started by the last calls may still be trying: its attempts are
            # in the server's log, so its outcome must be in the counts too.
            slot = handler.cache._slots[PROVIDER]
            settled = time.monotonic() + 2 * max_fetch_seconds(slot.settings)
            while slot.flight is not None and time.monotonic() < settled:
                time.sleep(0.01)
            stats = handler.cache.stats(PROVIDER)
        finally:
            handler.close()
        everyone = list(token_server.log)
        # This process's requests, and those whose sender had given up before they were answered
        # (a child that exited, or this process after a client timeout: they count as timeouts).
        log = [r for r in everyone if r.pid <= 0]
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
        if c.error is None and not c.cancelled and c.result != expected_result(c)
    ]
    assert not wrong, (
        f"{where} {len(wrong)} calls returned something else than the gateway's answer: {wrong[:5]}"
    )
    untraceable, failed_fetches = trace_failures(run, log, upstream)
    assert not untraceable, (
        f"{where} {len(untraceable)} failures (of a call, or of a token fetch shared by waiting calls) are not "
        f"traceable to an injected fault that outlasted the retry policy: calls were lost: {untraceable[:5]} "
        f"[token requests (index, fault, sender pid): {[(r.index, r.fault, r.pid) for r in everyone][:80]}]"
    )
    assert stats.fetch_failures == failed_fetches, (
        f"{where} the plugin counted {stats.fetch_failures} failed fetches but the token server's log shows "
        f"{failed_fetches} fetches whose every attempt was faulted: a healthy token request failed, "
        "or a fault was lost"
    )

    # -- cancellations reached their calls, and only them ---------------------------------------
    cancelled = [c for c in run.calls if c.cancelled]
    at_fetch = [c for c in cancelled if c.cancelled_at_fetch]
    assert at_fetch, (
        f"{where} no call was cancelled while waiting for a token fetch (the first "
        f"{FIRST_CANCELLED_AT_FETCH} asyncio calls wait for the cold start's, held {COLD_START_HOLD} s)"
    )
    # (every other call's failure was traced to an injected fault above, and every failed fetch
    # to faults in the token server's log: a cancelled waiter failed no one else's fetch)

    # -- forked children finished, and their calls succeeded unless a fault explains it ---------
    assert len(run.children) + run.forks_skipped == len(fork_at) and run.children, (
        f"{where} {len(run.children)} children forked of {len(fork_at)} ({run.forks_skipped} found no moment "
        "when every call in progress waited in the token cache): the forking thread stopped"
    )
    troubled = [
        f"child {c.pid} (forked during a fetch: {c.during_fetch}): {c.problem}"
        for c in run.children
        if c.problem
    ]
    assert not troubled, f"{where} forked children did not report within {child_bound:.0f} s: {troubled}"
    assert run.children[0].during_fetch, (
        f"{where} the first fork did not happen while a token fetch was in flight"
    )
    child_failures = [f for child in run.children for f in untraceable_child_failures(child, everyone)]
    assert not child_failures, (
        f"{where} calls in forked children failed without a fault of their own token requests: {child_failures[:5]}"
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
    failed_calls = [c for c in run.calls if c.error is not None and not c.cancelled]
    child_calls = [r for child in run.children for r in child.reports]
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
        "calls cancelled": len(cancelled),
        "cancelled by": dict(Counter(c.cancel for c in cancelled)),
        "cancelled while waiting for a token fetch": len(at_fetch),
        "cancellations planned, call done first": sum(
            1 for c in run.calls if c.cancel and not c.cancelled and c.error is None
        ),
        "forks": len(run.children),
        "forks skipped (no quiet moment)": run.forks_skipped,
        "forks during a token fetch": sum(c.during_fetch for c in run.children),
        "child calls": len(child_calls),
        "child calls failed": sum("error" in r for r in child_calls),
        "child token requests": len(everyone) - len(log),
        "... whose sender had given up before the answer": sum(r.pid < 0 for r in everyone),
        "slowest child s": round(max(c.seconds for c in run.children), 2),
        "child bound s": round(child_bound, 1),
        "slowest call s": round(slowest.duration, 2),
        "call bound s": round(call_bound, 1),
    }
    record_property("chaos", figures)
    print(f"\nchaos figures: {figures}")


async def async_calls(calls: list[Call]) -> list[str]:
    return [await async_call(call) for call in calls]


def warm_up() -> None:
    """One call of every kind, and one refused twice, against calm servers before the run.

    LiteLLM imports modules on first use; a thread importing one holds that module's import lock,
    which a child forked meanwhile inherits held and waits on forever. Forks during the run must
    meet locks of the plugin (reset after fork), not first-use imports.
    """
    with TokenServer(token_lifetime=TOKEN_LIFETIME) as tokens:
        tokens.add_client("test-client", SECRET)
        refused = CHILD_CALLS_FROM - 1
        with ChaosUpstream(tokens, {refused: 2}) as upstream:
            handler = OAuth2Handler(
                config=config_of({PROVIDER: provider_dict(tokens.token_url, api_base=upstream.base_url)})
            )
            try:
                for index, kind in enumerate(SYNC_KINDS):
                    assert sync_call(Call(CHILD_CALLS_FROM - 10 + index, kind, 0)) == expected_result(
                        Call(0, kind, 0)
                    )
                calls = [
                    Call(CHILD_CALLS_FROM - 5 + index, kind, 0) for index, kind in enumerate(ASYNC_KINDS)
                ]
                assert asyncio.run(async_calls(calls)) == [expected_result(call) for call in calls]
                with pytest.raises(litellm.AuthenticationError):
                    sync_call(Call(refused, "completion", 2))
            finally:
                handler.close()


def refresh_interval(expiry_buffer_seconds: float) -> float:
    """Seconds from obtaining a token to starting its refresh, by the cache's own rule."""
    token = Token(SecretStr("x"), "Bearer", TOKEN_LIFETIME, TOKEN_LIFETIME, TOKEN_LIFETIME)
    return Lifecycle.of(token, expiry_buffer_seconds).refresh_at


def survived_401s(history: list[str]) -> int:
    """Injected 401s that the plugin's one retry got past (another gateway request followed)."""
    return sum(1 for i, outcome in enumerate(history[:-1]) if outcome.startswith("injected"))
