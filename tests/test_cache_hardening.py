"""The token cache against cancellation, interrupts, failing threads, shared identities and hostile lifetimes.

Every test runs against the real loopback token server and counts the token requests it saw.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers import SECRET, config_of, provider, provider_dict
from pydantic import SecretStr
from redis_server import RedisServer, make_store

from litellm_oauth2 import OAuth2AuthenticationError, TokenCache
from litellm_oauth2.cache import (
    MIN_TOKEN_LIFETIME_SECONDS,
    REFETCH_AFTER_401_SECONDS,
    STORE_SLACK_SECONDS,
    InMemoryTokenStore,
    max_fetch_seconds,
)
from litellm_oauth2.config import ProviderSettings, RetrySettings
from litellm_oauth2.testing import TokenServer

WAIT = 30.0  # bound of every wait below; never reached unless the code under test hangs


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("test-client", SECRET)
        yield srv


def make_cache(server: TokenServer, **overrides: object) -> TokenCache:
    providers = {"idp": provider_dict(server.token_url, **overrides)}
    return TokenCache(config_of(providers), store=InMemoryTokenStore())


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` in a daemon thread; its result or exception lands in the returned list."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -- 14.1: one cancelled waiter must not cancel the others -------------------------------------


@pytest.mark.parametrize("when", ["cold start", "after expiry", "after a 401"])
def test_cancelling_one_waiter_leaves_the_others_their_token(server: TokenServer, when: str) -> None:
    server.token_lifetime = 2.0 if when == "after expiry" else 300
    cache = make_cache(server, expiry_buffer_seconds=0)
    if when != "cold start":
        first = cache.get_token("idp")
        if when == "after expiry":
            slot = cache._slots["idp"]
            wait_until(lambda: slot.cached is None or time.monotonic() >= slot.cached.usable_until, "expiry")
        else:
            cache.invalidate("idp", first)
    before, waits = server.token_requests, cache.stats("idp").waits
    server.delay_next(1, 3.0)  # the fetch is still running when the victim is cancelled

    async def until(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not condition() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def main() -> tuple[list[Any], BaseException | None]:
        victim = asyncio.create_task(cache.aget_token("idp"))
        others = [asyncio.create_task(cache.aget_token("idp")) for _ in range(5)]
        await until(lambda: server.token_requests > before)
        sync_thread, sync_outcome = in_thread(lambda: cache.get_token("idp"))
        await until(lambda: cache.stats("idp").waits >= waits + 7)
        victim.cancel()
        results: list[Any] = await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), WAIT)
        await asyncio.to_thread(sync_thread.join, WAIT)
        try:
            await victim
        except BaseException as exc:
            return results + sync_outcome, exc
        return results + sync_outcome, None

    results, victim_outcome = asyncio.run(main())
    assert isinstance(victim_outcome, asyncio.CancelledError)
    assert len(results) == 6 and all(isinstance(r, str) for r in results), results
    assert len(set(results)) == 1 and server.verify_access_token(results[0]) is not None
    assert server.token_requests == before + 1


class _StuckLockStore(InMemoryTokenStore):
    """A shared store whose lock never returns until released, like a distributed lock that hangs."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    @contextmanager
    def lock(self, key: str, settings: ProviderSettings) -> Iterator[None]:
        self.entered.set()
        self.release.wait()
        yield


@pytest.mark.parametrize("caller", ["thread", "asyncio task"])
def test_waiting_on_a_flight_that_never_ends_gives_up_after_its_longest_time(
    server: TokenServer, caller: str
) -> None:
    store = _StuckLockStore()
    settings = provider_dict(server.token_url, timeout_seconds=0.5, retry={"attempts": 0})
    cache = TokenCache(config_of({"idp": settings}), store=store)
    bound = 2 * max_fetch_seconds(cache._slots["idp"].settings) + STORE_SLACK_SECONDS
    stuck, _ = in_thread(lambda: cache.get_token("idp"))
    try:
        assert store.entered.wait(WAIT)
        if caller == "thread":
            waiter, outcome = in_thread(lambda: cache.get_token("idp"))
        else:
            waiter, outcome = in_thread(lambda: asyncio.run(cache.aget_token("idp")))
        waiter.join(bound + WAIT)
        assert outcome, f"the caller was still waiting {bound + WAIT:.0f} s later"
        error = outcome[0]
        assert isinstance(error, OAuth2AuthenticationError) and error.provider == "idp", error
        assert "no token after waiting" in str(error)
    finally:
        store.release.set()
        stuck.join(WAIT)
    assert server.verify_access_token(cache.get_token("idp")) is not None


# -- 14.5: a fetch thread that cannot start ------------------------------------------------------


@pytest.fixture
def failing_thread_start(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next fetch threads fail to start, as under a pids limit: as many as ``[1]`` says
    (1 unless the test sets it); ``[0]`` counts the failures."""
    real_start = threading.Thread.start
    failures = [0, 1]

    def start(self: threading.Thread) -> None:
        if failures[0] < failures[1] and self.name.startswith("litellm-oauth2-fetch"):
            failures[0] += 1
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return failures


def test_a_fetch_thread_that_cannot_start_fails_that_call_and_the_next_one_retries(
    server: TokenServer, failing_thread_start: list[int]
) -> None:
    cache = make_cache(server)

    async def call() -> str:
        return await asyncio.wait_for(cache.aget_token("idp"), WAIT)

    with pytest.raises(OAuth2AuthenticationError, match="provider 'idp'") as info:
        asyncio.run(call())
    assert info.value.provider == "idp" and failing_thread_start[0] == 1
    token = asyncio.run(call())
    assert server.verify_access_token(token) is not None
    assert server.token_requests == 1


def test_a_refresh_thread_that_cannot_start_keeps_the_token_and_is_retried(
    server: TokenServer, failing_thread_start: list[int]
) -> None:
    server.token_lifetime = 8.0  # 2 s between the refresh window and expiry: room for a slow machine
    cache = make_cache(server, expiry_buffer_seconds=0)
    # The cold fetch runs in the caller's thread and tries to start the refresher; the refresh
    # window, finding none, tries again: both fail.
    failing_thread_start[1] = 2
    first = cache.get_token("idp")
    assert failing_thread_start[0] == 1
    slot = cache._slots["idp"]
    assert slot.cached is not None
    wait_until(lambda: time.monotonic() >= slot.cached.refresh_at, "the refresh window")  # type: ignore[union-attr]
    assert cache.get_token("idp") == first
    assert failing_thread_start[0] == 2
    wait_until(lambda: cache.get_token("idp") != first, "a new token")
    assert server.token_requests == 2


# -- 14.6: KeyboardInterrupt and SystemExit stay in their own thread -----------------------------


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(1)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("signum", "handler", "kind"),
    [
        (signal.SIGINT, _raise_keyboard_interrupt, KeyboardInterrupt),
        (signal.SIGTERM, _raise_system_exit, SystemExit),
    ],
)
def test_an_interrupt_during_a_fetch_is_neither_shared_nor_cached(
    server: TokenServer, signum: int, handler: Any, kind: type[BaseException]
) -> None:
    cache = make_cache(server)
    server.delay_next(1, 10.0)
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    waiters: list[tuple[threading.Thread, list[Any]]] = []

    def interrupt_the_fetch() -> None:
        wait_until(lambda: server.token_requests == 1, "the fetch to reach the server")
        waiters.extend(in_thread(lambda: cache.get_token("idp")) for _ in range(3))
        wait_until(lambda: cache.stats("idp").waits == 4, "the waiters")
        assert main is not None
        signal.pthread_kill(main, signum)

    previous = signal.signal(signum, handler)
    try:
        interrupter, _ = in_thread(interrupt_the_fetch)
        with pytest.raises(kind):
            cache.get_token("idp")  # fetches in this (the main) thread
        try:
            token = cache.get_token("idp")  # right away: the interrupt was not remembered
        except BaseException as exc:
            pytest.fail(f"the interrupt was replayed to the next call: {exc!r}")
    finally:
        signal.signal(signum, previous)
    interrupter.join(WAIT)
    for thread, _ in waiters:
        thread.join(WAIT)
    outcomes = [outcome for _, outcomes in waiters for outcome in outcomes]
    assert len(outcomes) == 3
    assert all(isinstance(o, str | OAuth2AuthenticationError) for o in outcomes), outcomes
    assert server.verify_access_token(token) is not None
    assert server.token_requests <= 3


# -- 14.10: what the token request depends on, and whose name errors carry ----------------------

# Every ProviderSettings field, with another value that must change the token identity, or (the
# second table) that shapes only the LLM request or validation and so must not split a shared token.
IDENTITY_FIELDS: dict[str, Any] = {
    "client_id": "other-client",
    "client_secret": SecretStr("another secret"),
    "token_url": "http://127.0.0.1:1/other-token",
    "scope": "write",
    "refresh_token": SecretStr("rt"),
    "audience": "https://api.example",
    "resource": ("https://api.example",),
    "extra_token_params": {"tenant": "t1"},
    "token_endpoint_auth_method": "client_secret_post",
    "basic_auth_encoding": "raw",
    "signing_algorithm": "ES256",
    "key_id": "key-1",
    "private_key_path": "/etc/key.pem",
    "private_key": SecretStr("-----BEGIN PRIVATE KEY-----"),
    "expiry_buffer_seconds": 5.0,
    "default_expires_in": 60.0,
    "timeout_seconds": 7.0,
    "verify": False,
    "retry": RetrySettings(attempts=1),
    "issuer": "https://idp.example.com",
    "client_secret_path": "/run/secrets/client-secret",
    "client_assertion_path": "/var/run/secrets/tokens/token",
    "client_certificate_path": "/etc/tls/tls.crt",
    "client_key_path": "/etc/tls/tls.key",
    "client_key_password": SecretStr("key password"),
}
REQUEST_ONLY_FIELDS: dict[str, Any] = {
    "api_base": "http://127.0.0.1:1/v1",
    "headers": {"X-Tenant": "t1"},
    "allow_insecure_http": True,
    "api_style": "azure",
    "api_version": "v1",
    "responses_api_version": "preview",
}
# Fields valid only beside another one.
_REQUIRES = {"api_version": {"api_style": "azure"}, "responses_api_version": {"api_style": "azure"}}


# The gateway's client certificate is request-only too; its files must exist, so it is tested apart.
GATEWAY_CERTIFICATE_FIELDS = (
    "gateway_client_certificate_path",
    "gateway_client_key_path",
    "gateway_client_key_password",
)


def test_every_setting_is_classified_for_the_token_identity() -> None:
    classified = {"provider_name"} | set(IDENTITY_FIELDS) | set(REQUEST_ONLY_FIELDS)
    assert set(ProviderSettings.model_fields) == classified | set(GATEWAY_CERTIFICATE_FIELDS)


def test_providers_differing_only_in_their_gateway_certificate_share_one_token(
    server: TokenServer, tmp_path: Path
) -> None:
    from litellm_oauth2.testing._tls import PrivateCA

    ca = PrivateCA(tmp_path / "pki")
    encrypted = ca.issue("gateway-client", password=b"gateway key password")
    gateway_certificate = {
        "gateway_client_certificate_path": str(encrypted.certificate_path),
        "gateway_client_key_path": str(encrypted.key_path),
        "gateway_client_key_password": "gateway key password",
    }
    cache = TokenCache(
        config_of(
            {
                "a": provider_dict(server.token_url),
                "b": provider_dict(server.token_url, **gateway_certificate),
            }
        ),
        store=InMemoryTokenStore(),
    )
    assert cache.get_token("a") == cache.get_token("b")
    assert server.token_requests == 1


@pytest.mark.parametrize(("field", "value"), sorted(IDENTITY_FIELDS.items()))
def test_settings_that_change_the_token_request_change_the_cache_key(field: str, value: Any) -> None:
    base = provider("http://127.0.0.1:9/token")
    assert base.cache_key != base.model_copy(update={field: value}).cache_key


@pytest.mark.parametrize(("field", "value"), sorted(REQUEST_ONLY_FIELDS.items()))
def test_settings_of_the_llm_request_share_one_token(server: TokenServer, field: str, value: Any) -> None:
    cache = TokenCache(
        config_of(
            {
                "a": provider_dict(server.token_url),
                "b": provider_dict(server.token_url, **{field: value, **_REQUIRES.get(field, {})}),
            }
        ),
        store=InMemoryTokenStore(),
    )
    assert cache.get_token("a") == cache.get_token("b")
    assert server.token_requests == 1


def test_providers_differing_only_in_client_authentication_each_authenticate_their_way(
    server: TokenServer,
) -> None:
    cache = TokenCache(
        config_of(
            {
                "basic": provider_dict(server.token_url),
                "post": provider_dict(server.token_url, token_endpoint_auth_method="client_secret_post"),
            }
        ),
        store=InMemoryTokenStore(),
    )
    assert cache.get_token("basic") != cache.get_token("post")
    basic, post = server.requests
    assert basic.headers.get("authorization", "").startswith("Basic ")
    assert "authorization" not in post.headers and post.form.get("client_secret") == [SECRET]


def test_errors_name_the_provider_the_caller_asked_for(server: TokenServer) -> None:
    cache = TokenCache(
        config_of({"first": provider_dict(server.token_url), "second": provider_dict(server.token_url)}),
        store=InMemoryTokenStore(),
    )
    server.fail_next(100, status=401, error="invalid_client")
    for name in ("second", "first", "second"):  # a fetch, then (within 1 s) the shared failure twice
        with pytest.raises(OAuth2AuthenticationError) as info:
            cache.get_token(name)
        other = "first" if name == "second" else "second"
        assert info.value.provider == name and f"provider '{name}'" in str(info.value)
        assert f"'{other}'" not in str(info.value) and info.value.error == "invalid_client"
    assert server.token_requests <= 3


# -- 14.12: bounded load on the identity provider ------------------------------------------------


def test_a_tiny_lifetime_is_used_for_the_floor_with_one_warning(
    server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    server.token_lifetime = 1e-6
    server.exp_lifetime = 3600  # expires_in alone is tiny: a JWT already past its exp is refused outright
    cache = make_cache(server)
    started = time.monotonic()
    for _ in range(50):
        cache.get_token("idp")
    elapsed = time.monotonic() - started
    # At most one request per 3/4 of the floor (the refresh point), plus the first.
    assert server.token_requests <= 2 + elapsed / (0.75 * MIN_TOKEN_LIFETIME_SECONDS)
    warnings = [r for r in caplog.records if "shorter than" in r.getMessage()]
    assert len(warnings) == 1 and "idp" in warnings[0].getMessage()


def test_a_gateway_refusing_every_token_does_not_drive_one_token_request_per_call(
    server: TokenServer,
) -> None:
    cache = make_cache(server)
    started = time.monotonic()
    for _ in range(50):  # what the provider does on each 401: drop the token it used, take another
        used = cache.get_token("idp")
        cache.invalidate("idp", used)
        cache.get_token("idp")
    elapsed = time.monotonic() - started
    assert server.token_requests <= 2 + elapsed / REFETCH_AFTER_401_SECONDS


def test_litellm_calls_to_a_gateway_refusing_every_token_make_bounded_token_requests() -> None:
    import litellm

    from litellm_oauth2 import OAuth2Handler
    from litellm_oauth2.testing import OpenAIUpstream

    with TokenServer() as tokens, OpenAIUpstream(tokens) as upstream:
        tokens.add_client("test-client", SECRET)
        config = config_of({"refusing_gw": provider_dict(tokens.token_url, api_base=upstream.base_url)})
        handler = OAuth2Handler(config=config)
        try:
            upstream.fail_next(1000, 401)
            started = time.monotonic()
            for _ in range(50):
                with pytest.raises(litellm.AuthenticationError):
                    litellm.completion(model="refusing_gw/m", messages=[{"role": "user", "content": "hi"}])
            elapsed = time.monotonic() - started
        finally:
            handler.close()
    assert upstream.requests == 100  # each call: the request and its one retry after the 401
    assert tokens.token_requests <= 2 + elapsed / REFETCH_AFTER_401_SECONDS


def test_a_401_after_the_backoff_fetches_again(server: TokenServer) -> None:
    cache = make_cache(server)
    first = cache.get_token("idp")
    assert cache.invalidate("idp", first)
    second = cache.get_token("idp")
    assert not cache.invalidate("idp", second), "a second 401 right after a refetch fetched again"
    assert cache.get_token("idp") == second and server.token_requests == 2
    slot = cache._slots["idp"]
    slot.invalidated_at -= REFETCH_AFTER_401_SECONDS  # the interval has passed
    assert cache.invalidate("idp", second)
    assert cache.get_token("idp") not in (first, second) and server.token_requests == 3


# -- 15.9: close() closes what the cache opened ---------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        with RedisServer() as running:
            yield running
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_close_closes_the_redis_store_the_cache_opened_and_no_other(
    server: TokenServer, redis_server: RedisServer
) -> None:
    config = config_of(
        {"idp": provider_dict(server.token_url)}, cache={"type": "redis", "url": redis_server.url}
    )
    admin = redis_server.client()
    admin_id = admin.client_id()

    def connections() -> set[int]:
        return {int(c["id"]) for c in admin.client_list()} - {admin_id}

    opened = TokenCache(config)
    opened.get_token("idp")
    own = connections()
    passed = TokenCache(config, store=make_store(config))
    passed.get_token("idp")
    wait_until(lambda: len(connections()) == len(own) + 1, "the second store's connection")
    of_passed = connections() - own
    opened.close()
    wait_until(lambda: connections() == of_passed, "the opened store's connections to close")
    passed.close()
    time.sleep(0.3)  # a closed connection would be gone by now; this one must stay
    assert connections() == of_passed, "close() closed a store the caller passed in"
    admin.close()
