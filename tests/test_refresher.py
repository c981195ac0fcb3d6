"""The refresher: one thread per token identity however many refresh windows open, none after close.

Counts thread objects and token requests at the real loopback token server, never time. The
thread that made each token request is taken from the client's own DEBUG record of it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import _refresher
from litellm_oauth2.cache import InMemoryTokenStore, TokenCache
from litellm_oauth2.testing import TokenServer

WAIT = 30.0  # bound of every wait below; never reached unless the code under test hangs
PREFIX = "litellm-oauth2-fetch"


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=1.0) as srv:
        srv.add_client("test-client", SECRET)
        srv.add_client("other-client", SECRET)
        yield srv


class _FetchingThreads(logging.Handler):
    """The thread (object, not its reusable ident) behind each token request the client logs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.threads: list[threading.Thread] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("provider ") and "requesting token" in record.getMessage():
            self.threads.append(threading.current_thread())


@pytest.fixture
def fetching_threads() -> Iterator[_FetchingThreads]:
    handler = _FetchingThreads()
    logger = logging.getLogger("litellm_oauth2")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def make_cache(server: TokenServer, **providers: str) -> TokenCache:
    settings = {
        name: provider_dict(server.token_url, client_id=client, expiry_buffer_seconds=0)
        for name, client in (providers or {"idp": "test-client"}).items()
    }
    return TokenCache(config_of(settings), store=InMemoryTokenStore())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


_EARLIER: set[threading.Thread] = set()


@pytest.fixture(autouse=True)
def _earlier_threads() -> None:
    """Refreshers of caches other tests built (and the garbage collector has not yet taken) are
    not this test's: counts below are of threads started during the test."""
    _EARLIER.clear()
    _EARLIER.update(threading.enumerate())


def fetch_threads_alive() -> list[threading.Thread]:
    return [
        t for t in threading.enumerate() if t.name.startswith(PREFIX) and t.is_alive() and t not in _EARLIER
    ]


def through_windows(cache: TokenCache, server: TokenServer, renewals: int, *providers: str) -> None:
    """Call every provider until each has had ``renewals`` more token requests (background refreshes)."""
    names = providers or ("idp",)
    clients = [cache._slots[name].settings.client_id for name in names]
    targets = [server.token_requests_for(client) + renewals for client in clients]

    def renewed() -> bool:
        for name in names:
            cache.get_token(name)
        return all(server.token_requests_for(c) >= t for c, t in zip(clients, targets, strict=True))

    wait_until(renewed, f"{renewals} refreshes")


def test_one_refresher_thread_per_identity_however_many_windows_open(
    server: TokenServer, fetching_threads: _FetchingThreads
) -> None:
    cache = make_cache(server, a="test-client", b="other-client")
    try:
        cache.get_token("a"), cache.get_token("b")  # cold, in this thread
        through_windows(cache, server, 4, "a", "b")
        background = [t for t in fetching_threads.threads if t is not threading.current_thread()]
        assert len(background) >= 8
        # Each identity has its own refresher (a slow identity provider delays no other), and only one.
        assert len(set(background)) == 2, sorted(t.name for t in set(background))
        assert {t.name for t in background} == {f"{PREFIX}-a", f"{PREFIX}-b"}
        assert len(fetch_threads_alive()) == 2
        assert cache.stats("a").waits == cache.stats("b").waits == 1  # only the cold fetch waited
    finally:
        cache.close()
    assert fetch_threads_alive() == []


def test_asyncio_cold_fetches_are_handed_to_the_refresher(
    server: TokenServer, fetching_threads: _FetchingThreads
) -> None:
    server.token_lifetime = 300
    cache = make_cache(server)

    async def cold_fetches() -> None:
        for _ in range(5):
            cache.invalidate("idp")
            await asyncio.wait_for(cache.aget_token("idp"), WAIT)

    try:
        asyncio.run(cold_fetches())
        assert server.token_requests == 5
        assert len(set(fetching_threads.threads)) == 1, "a thread was started per fetch"
        assert fetching_threads.threads[0].name == f"{PREFIX}-idp"
    finally:
        cache.close()


def test_close_leaves_no_thread_and_a_later_call_starts_one_again(server: TokenServer) -> None:
    before = set(threading.enumerate())
    cache = make_cache(server)
    cache.get_token("idp")
    through_windows(cache, server, 1)
    assert len(fetch_threads_alive()) == 1
    cache.close()
    assert fetch_threads_alive() == []
    cache.invalidate("idp")
    assert server.verify_access_token(cache.get_token("idp")) is not None
    through_windows(cache, server, 1)
    cache.close()
    left = [t for t in set(threading.enumerate()) - before if t.name.startswith("litellm-oauth2")]
    wait_until(lambda: not any(t.is_alive() for t in left), "the deadline watchdogs to end")
    assert fetch_threads_alive() == []


def test_a_cache_dropped_without_close_lets_its_refresher_end(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_refresher, "IDLE_CHECK_SECONDS", 0.05)
    cache = make_cache(server)
    cache.get_token("idp")
    through_windows(cache, server, 1)
    assert len(fetch_threads_alive()) == 1
    del cache
    gc.collect()
    wait_until(lambda: fetch_threads_alive() == [], "the refresher of a dropped cache to end")


def _child_through_windows(cache: TokenCache, results: Any) -> None:
    try:
        inherited = cache.get_token("idp")  # the parent's token, not expired yet
        fetching = _FetchingThreads()
        logger = logging.getLogger("litellm_oauth2")
        logger.addHandler(fetching)
        logger.setLevel(logging.DEBUG)
        deadline = time.monotonic() + WAIT
        while len(fetching.threads) < 3 and time.monotonic() < deadline:
            cache.get_token("idp")
            time.sleep(0.005)
        names = sorted({t.name for t in fetching.threads})
        results.put(
            {
                "inherited_token_served": bool(inherited),
                "refreshes": len(fetching.threads),
                "fetching_threads": len(set(fetching.threads)),
                "names": names,
                "alive": len(fetch_threads_alive()),
                "waits": cache.stats("idp").waits,
            }
        )
    except BaseException as exc:
        results.put({"error": repr(exc)})


def test_a_forked_child_starts_its_own_refresher_and_the_parents_keeps_working(
    server: TokenServer, fetching_threads: _FetchingThreads
) -> None:
    server.token_lifetime = 2.0
    cache = make_cache(server)
    try:
        cache.get_token("idp")
        through_windows(cache, server, 1)
        parent_refresher = [t for t in fetching_threads.threads if t.name == f"{PREFIX}-idp"]
        assert len(set(parent_refresher)) == 1
        waits_before = cache.stats("idp").waits

        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_child_through_windows, args=(cache, results))
        child.start()
        try:
            report = results.get(timeout=WAIT)
        finally:
            child.join(WAIT)
            if child.is_alive():
                child.kill()
                child.join(WAIT)
        assert "error" not in report, report
        assert report["refreshes"] >= 3 and report["fetching_threads"] == 1, report
        assert report["names"] == [f"{PREFIX}-idp"] and report["alive"] == 1, report
        assert report["waits"] == waits_before, "a caller in the child waited on the token endpoint"

        through_windows(cache, server, 2)  # the parent's refresher, untouched by the child
        parent_after = [t for t in fetching_threads.threads if t.name == f"{PREFIX}-idp"]
        assert set(parent_after) == set(parent_refresher)
        assert len(fetch_threads_alive()) == 1
    finally:
        cache.close()


def test_refresh_windows_start_no_thread_once_warm(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the refresh (handed to the refresher) nor its token request (deadline watchdog) starts one."""
    cache = make_cache(server)
    try:
        cache.get_token("idp")
        through_windows(cache, server, 1)  # the refresher and the deadline watchdog now run
        started: list[str] = []
        real_start = threading.Thread.start

        def counting_start(self: threading.Thread) -> None:
            started.append(self.name)
            real_start(self)

        monkeypatch.setattr(threading.Thread, "start", counting_start)
        through_windows(cache, server, 4)
        assert started == [], started
    finally:
        cache.close()
