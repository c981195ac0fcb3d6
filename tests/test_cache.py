"""The token cache under concurrency, expiry and failure, counting requests at the real token server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import OAuth2AuthenticationError, OAuth2ConfigurationError, TokenCache
from litellm_oauth2.cache import NEGATIVE_CACHE_SECONDS, InMemoryTokenStore, Lifecycle
from litellm_oauth2.client import Token
from litellm_oauth2.testing import TokenServer


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("test-client", SECRET)
        srv.add_client("other-client", SECRET)
        yield srv


def make_cache(server: TokenServer, **overrides: object) -> TokenCache:
    """A cache with its own store, so tests never share tokens through the process store."""
    providers = {"idp": provider_dict(server.token_url, **overrides)}
    return TokenCache(config_of(providers), store=InMemoryTokenStore())


def crowd(cache: TokenCache, provider: str, threads: int, tasks: int, loops: int = 1) -> list[str]:
    """``threads`` threads plus ``tasks`` asyncio tasks on each of ``loops`` event loops, released at once."""
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads + loops)

    def thread_caller() -> None:
        barrier.wait()
        try:
            token = cache.get_token(provider)
        except BaseException as exc:
            errors.append(exc)
            return
        with lock:
            results.append(token)

    def loop_runner() -> None:
        async def main() -> list[str]:
            barrier.wait()
            return await asyncio.gather(*(cache.aget_token(provider) for _ in range(tasks)))

        try:
            tokens = asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
            return
        with lock:
            results.extend(tokens)

    workers = [threading.Thread(target=thread_caller) for _ in range(threads)]
    workers += [threading.Thread(target=loop_runner) for _ in range(loops)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    if errors:
        raise errors[0]
    return results


def test_cold_stampede_of_threads_and_tasks_makes_one_request(server: TokenServer) -> None:
    server.delay_next(1, 0.3)
    cache = make_cache(server)
    tokens = crowd(cache, "idp", threads=200, tasks=200)
    assert len(tokens) == 400
    assert len(set(tokens)) == 1
    assert server.token_requests == 1
    assert server.verify_access_token(tokens[0]) is not None


def test_cold_stampede_across_two_event_loops_makes_one_request(server: TokenServer) -> None:
    server.delay_next(1, 0.3)
    cache = make_cache(server)
    tokens = crowd(cache, "idp", threads=0, tasks=200, loops=2)
    assert len(tokens) == 400 and len(set(tokens)) == 1
    assert server.token_requests == 1


def test_slow_provider_does_not_delay_another(server: TokenServer) -> None:
    with TokenServer() as slow_server:
        slow_server.add_client("test-client", SECRET)
        slow_server.delay = 2.0
        cache = TokenCache(
            config_of(
                {"slow": provider_dict(slow_server.token_url), "fast": provider_dict(server.token_url)}
            ),
            store=InMemoryTokenStore(),
        )
        finished: list[str] = []
        slow_callers = [
            threading.Thread(target=lambda: finished.append(("slow", cache.get_token("slow"))[0]))
            for _ in range(5)
        ]
        for caller in slow_callers:
            caller.start()
        while slow_server.token_requests == 0:
            time.sleep(0.01)
        fast_tokens = crowd(cache, "fast", threads=20, tasks=20)
        finished_before_slow = list(finished)
        for caller in slow_callers:
            caller.join()
    assert len(fast_tokens) == 40
    assert finished_before_slow == [], "fast provider's callers finished only after the slow provider's fetch"
    assert finished == ["slow"] * 5
    assert slow_server.token_requests == 1 and server.token_requests == 1


def test_identical_settings_share_a_token_and_different_scopes_do_not(server: TokenServer) -> None:
    cache = TokenCache(
        config_of(
            {
                "a": provider_dict(server.token_url, scope="read"),
                "b": provider_dict(server.token_url, scope="read"),
                "c": provider_dict(server.token_url, scope="write"),
            }
        ),
        store=InMemoryTokenStore(),
    )
    a, b, c = (cache.get_token(name) for name in "abc")
    assert a == b != c
    assert server.verify_access_token(c)["scope"] == "write"
    assert server.token_requests == 2


def test_authorization_header_follows_the_token_through_refresh_and_invalidation(server: TokenServer) -> None:
    server.token_lifetime = 1.0
    cache = TokenCache(
        config_of(
            {
                "a": provider_dict(server.token_url, expiry_buffer_seconds=0),
                "b": provider_dict(server.token_url, expiry_buffer_seconds=0),
            }
        ),
        store=InMemoryTokenStore(),
    )
    first = cache.get_authorization("a")
    assert first == "Bearer " + cache.get_token("a") == cache.get_authorization("b")
    assert asyncio.run(cache.aget_authorization("b")) == first
    assert server.verify_access_token(first.removeprefix("Bearer ")) is not None
    assert server.token_requests == 1

    deadline = time.monotonic() + 5
    while cache.get_authorization("b") == first and time.monotonic() < deadline:
        time.sleep(0.01)
    refreshed = cache.get_authorization("b")
    assert refreshed != first and server.token_requests == 2, "the refresh did not reach both providers"
    assert refreshed == cache.get_authorization("a") == "Bearer " + cache.get_token("a")

    cache.invalidate("a", cache.get_token("a"))
    renewed = cache.get_authorization("b")
    assert renewed not in (first, refreshed) and server.token_requests == 3
    assert server.verify_access_token(renewed.removeprefix("Bearer ")) is not None


def test_refresh_ahead_under_load_one_request_per_refresh_and_no_waits(server: TokenServer) -> None:
    lifetime, duration, workers = 1.0, 10.0, 16
    server.token_lifetime = lifetime
    cache = make_cache(server, expiry_buffer_seconds=0)
    cache.get_token("idp")
    waits_after_warmup = cache.stats("idp").waits
    stop = time.monotonic() + duration
    seen: set[str] = set()
    failures: list[BaseException] = []

    def worker() -> None:
        while time.monotonic() < stop:
            try:
                token = cache.get_token("idp")
            except BaseException as exc:
                failures.append(exc)
                return
            if server.verify_access_token(token) is None:
                failures.append(AssertionError("served a token the server no longer accepts"))
                return
            seen.add(token)
            time.sleep(0.002)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    # Refresh opens after 75 % of the usable life (buffer 0): one request per 0.75 s.
    lifecycle = Lifecycle.of(_token(lifetime), 0)
    refresh_age = lifecycle.refresh_at
    expected = duration / refresh_age
    assert expected - 2 <= server.token_requests <= expected + 2
    assert cache.stats("idp").waits == waits_after_warmup, (
        "a caller waited on the token endpoint after warm-up"
    )
    assert cache.stats("idp").background_refreshes == server.token_requests - 1
    assert len(seen) >= expected - 2


def _token(lifetime: float) -> Token:
    from pydantic import SecretStr

    return Token(SecretStr("t"), "Bearer", expires_at=lifetime, expires_at_wall=lifetime, lifetime=lifetime)


@pytest.mark.parametrize(
    ("lifetime", "buffer", "refresh_at", "usable_until"),
    [
        (3600, 60, 2655, 3540),
        (300, 60, 180, 240),
        (3, 60, 1.125, 2.25),
        (3, 0, 2.25, 3),
    ],
)
def test_lifecycle_rule(lifetime: float, buffer: float, refresh_at: float, usable_until: float) -> None:
    lifecycle = Lifecycle.of(_token(lifetime), buffer)
    assert lifecycle.refresh_at == pytest.approx(refresh_at)
    assert lifecycle.usable_until == pytest.approx(usable_until)


def test_failed_background_refresh_keeps_serving_then_recovers(
    server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    server.token_lifetime = 4
    cache = make_cache(server, expiry_buffer_seconds=0, retry={"attempts": 0})
    first = cache.get_token("idp")
    server.fail_next(1000, status=503)
    while time.monotonic() < cache._slots["idp"].cached.refresh_at:  # type: ignore[union-attr]
        time.sleep(0.01)
    served: list[str] = []
    while cache.stats("idp").fetch_failures < 1:
        served.append(cache.get_token("idp"))
        time.sleep(0.005)
    assert set(served) == {first}

    def warned() -> bool:
        return any("background token refresh failed" in r.getMessage() for r in caplog.records)

    # The failure is counted just before its WARNING is written, by the refresh thread.
    deadline = time.monotonic() + 5
    while not warned() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert warned()
    server.reset()
    deadline = time.monotonic() + 3
    token = first
    while token == first and time.monotonic() < deadline:
        token = cache.get_token("idp")
        time.sleep(0.01)
    assert token != first and server.verify_access_token(token) is not None


def test_invalidate_with_a_stale_token_is_a_no_op(server: TokenServer) -> None:
    cache = make_cache(server)
    first = cache.get_token("idp")
    cache.invalidate("idp", "some-older-token")
    assert cache.get_token("idp") == first
    assert server.token_requests == 1


def test_burst_of_invalidations_after_revocation_makes_one_request(server: TokenServer) -> None:
    cache = make_cache(server)
    revoked = cache.get_token("idp")
    server.revoke(revoked)
    server.delay_next(1, 0.2)
    barrier = threading.Barrier(50)
    results: list[str] = []

    def on_401() -> None:
        barrier.wait()
        cache.invalidate("idp", revoked)
        results.append(cache.get_token("idp"))

    threads = [threading.Thread(target=on_401) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.token_requests == 2
    assert len(set(results)) == 1 and results[0] != revoked


def test_errors_are_shared_by_waiters_and_cached_only_briefly(server: TokenServer) -> None:
    cache = make_cache(server)
    server.delay = 0.3
    server.fail_next(1, status=401, error="invalid_client")
    with pytest.raises(OAuth2AuthenticationError, match="invalid_client"):
        crowd(cache, "idp", threads=20, tasks=20)
    server.delay = 0
    assert server.token_requests == 1
    with pytest.raises(OAuth2AuthenticationError, match="invalid_client"):
        cache.get_token("idp")
    assert server.token_requests == 1, "a failure inside the negative window reached the server"
    time.sleep(NEGATIVE_CACHE_SECONDS + 0.1)
    assert server.verify_access_token(cache.get_token("idp")) is not None
    assert server.token_requests == 2


def test_aget_token_does_not_block_the_event_loop(server: TokenServer) -> None:
    cache = make_cache(server)
    server.delay_next(1, 0.3)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await cache.aget_token("idp")
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10


def test_unknown_provider_is_a_configuration_error(server: TokenServer) -> None:
    cache = make_cache(server)
    with pytest.raises(OAuth2ConfigurationError, match=r"unknown OAuth2 provider 'nope'.*idp"):
        cache.get_token("nope")


def test_no_token_or_secret_in_logs(server: TokenServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.token_lifetime = 1
    cache = make_cache(server, expiry_buffer_seconds=0, retry={"attempts": 1, "initial_delay": 0})
    cache.get_token("idp")
    server.fail_next(2, status=503)
    deadline = time.monotonic() + 3
    while cache.stats("idp").fetch_failures < 1 and time.monotonic() < deadline:
        cache.get_token("idp")
        time.sleep(0.01)
    texts = [r.getMessage() for r in caplog.records] + [repr(cache), repr(cache._slots["idp"].cached)]
    secrets = [SECRET, *server.issued_tokens]
    assert not [s for s in secrets for t in texts if s in t]
    assert cache.stats("idp").fetch_failures >= 1
