"""The Redis token store against a real redis-server and the real token server, across processes.

Worker processes (``redis_server.PROCESSES``, fresh interpreters) each build their ``TokenCache``
from a pickled config pointing at the token server and Redis run by this process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")
if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed (apt-get install redis-server)", allow_module_level=True)

import redis
from helpers import SECRET, config_of, provider_dict
from redis_server import (
    PROCESSES,
    RedisServer,
    collect,
    free_port,
    load_process,
    lock_holder_process,
    make_store,
    stampede_process,
)

from litellm_oauth2 import OAuth2ConfigurationError, TokenCache
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.redis_store import RedisTokenStore
from litellm_oauth2.testing import TokenServer

OTHER_SECRET = "an0ther-s3cret-value"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """The session's Redis, running and empty at the start of the test."""
    if not redis_server.running:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("test-client", SECRET)
        srv.add_client("other-client", OTHER_SECRET)
        yield srv


def redis_config(server: TokenServer, url: str, *, encryption: bool = True, **overrides: Any) -> OAuth2Config:
    cache = {"type": "redis", "url": url, "encryption": encryption}
    return config_of({"idp": provider_dict(server.token_url, **overrides)}, cache=cache)


def token_keys(client: redis.Redis) -> list[bytes]:
    return sorted(key for key in client.keys("*") if b":token:" in key)


# -- cross-process single flight ----------------------------------------------------------------


def test_cold_stampede_of_8_processes_x_25_callers_makes_one_request(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = redis_config(server, redis_server.url)
    server.delay_next(1, 0.5)
    processes_count, callers = 8, 25
    barrier = PROCESSES.Barrier(processes_count)
    results = PROCESSES.Queue()
    processes = [
        PROCESSES.Process(target=stampede_process, args=(config, barrier, callers, results))
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    collected = collect(results, processes)
    errors = [error for _, errs in collected for error in errs]
    tokens = [token for toks, _ in collected for token in toks]
    assert not errors
    assert len(tokens) == processes_count * callers
    assert len(set(tokens)) == 1
    print(f"stampede: {server.token_requests} token request for {len(tokens)} calls")
    assert server.token_requests == 1
    assert server.verify_access_token(tokens[0]) is not None


def test_continuous_load_from_4_processes_makes_one_request_per_lifetime(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    lifetime, lifetimes, processes_count = 1.5, 6, 4
    duration = lifetime * lifetimes
    server.token_lifetime = lifetime
    config = redis_config(server, redis_server.url, expiry_buffer_seconds=0)
    barrier = PROCESSES.Barrier(processes_count)
    results = PROCESSES.Queue()
    processes = [
        PROCESSES.Process(target=load_process, args=(config, barrier, duration, 4, results))
        for _ in range(processes_count)
    ]
    for process in processes:
        process.start()
    collected = collect(results, processes, timeout=60 + duration)
    errors = [error for _, errs, _, _ in collected for error in errs]
    assert not errors
    assert all(calls > 100 for _, _, calls, _ in collected)
    # Buffer 0: a token is refreshed after 75 % of its life, so one request per 1.125 s in total
    # (plus the cold start); four unshared processes would make four times as many.
    period = 0.75 * lifetime
    expected = 1 + duration / period
    requests = server.token_requests
    print(f"continuous load: {requests} token requests, expected about {expected:.1f}")
    assert expected - 2 <= requests <= expected + 1
    assert sum(fetches for *_, fetches in collected) == requests
    issued = set(server.issued_tokens)
    for seen, *_ in collected:
        assert set(seen) <= issued


def test_lock_of_a_killed_process_expires_and_the_others_proceed(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    lease = 1.5
    config = redis_config(server, redis_server.url)
    server.delay_next(1, 60)
    holder = PROCESSES.Process(target=lock_holder_process, args=(config, lease))
    holder.start()
    deadline = time.monotonic() + 30
    while server.token_requests == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.token_requests == 1, "the holder process never sent its token request"
    locks = [key for key in redis_db.keys("*") if b":lock:" in key]
    assert len(locks) == 1 and redis_db.pttl(locks[0]) > 0
    holder.kill()
    holder.join(timeout=10)
    assert holder.exitcode is not None and holder.exitcode < 0

    # Three more "processes": each its own store (connection pool, local lock) and cache.
    caches = [TokenCache(config, store=make_store(config)) for _ in range(3)]
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda c=c: tokens.append(c.get_token("idp"))) for c in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(tokens) == 3 and len(set(tokens)) == 1
    print(f"killed holder: {server.token_requests} token requests (the dead one's and one more)")
    assert server.token_requests == 2, "after the lock expired exactly one of the others fetched"
    assert not [r for r in caplog.records if "requesting here" in r.getMessage()], "a waiter timed out"


def test_a_live_holder_keeps_its_lock_past_the_lease_while_fetching(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = redis_config(server, redis_server.url)
    holder = TokenCache(config, store=make_store(config, lock_lease_seconds=1.0))
    server.delay_next(1, 3.0)  # three leases long: the holder must renew to keep the others waiting
    tokens: list[str] = []
    thread = threading.Thread(target=lambda: tokens.append(holder.get_token("idp")))
    thread.start()
    while server.token_requests == 0:
        time.sleep(0.01)
    waiter = TokenCache(config, store=make_store(config))
    tokens.append(waiter.get_token("idp"))
    thread.join(timeout=10)
    assert len(tokens) == 2 and tokens[0] == tokens[1]
    assert server.token_requests == 1


def test_a_waiter_stops_waiting_for_a_stuck_holder_and_fetches_itself(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    config = redis_config(server, redis_server.url, timeout_seconds=0.2, retry={"attempts": 0})
    store = make_store(config)
    # A holder that renews forever and never stores a token (say, a hung process).
    redis_db.set(store._keys(config.provider("idp").cache_key).lock, "someone-else", px=60_000)
    started = time.monotonic()
    token = TokenCache(config, store=store).get_token("idp")
    assert server.verify_access_token(token) is not None and server.token_requests == 1
    # Waits as long as one token request can take (0.2 s, no retry, plus 1 s) before fetching;
    # the upper bound only guards against hanging on the stuck lock.
    assert 1.0 < time.monotonic() - started < 30
    assert [r.getMessage() for r in caplog.records if "requesting here" in r.getMessage()]


# -- Redis outages ------------------------------------------------------------------------------


def test_redis_stopped_mid_run_calls_keep_succeeding_and_sharing_resumes(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="litellm_oauth2")
    lifetime = 1.5
    server.token_lifetime = lifetime
    config = redis_config(server, redis_server.url, expiry_buffer_seconds=0, retry={"attempts": 0})
    stores = [make_store(config, retry_interval=0.3) for _ in range(2)]
    caches = [TokenCache(config, store=store) for store in stores]
    failures: list[BaseException] = []

    def run(seconds: float) -> None:
        def worker(cache: TokenCache) -> None:
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                try:
                    token = cache.get_token("idp")
                except BaseException as exc:
                    failures.append(exc)
                    return
                if server.verify_access_token(token) is None:
                    failures.append(AssertionError("served a token the server does not accept"))
                    return
                time.sleep(0.005)

        threads = [threading.Thread(target=worker, args=(cache,)) for cache in caches for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    run(lifetime)
    shared = server.token_requests
    assert not failures and shared <= 2  # cold start and one refresh, shared (unshared: 4)

    redis_server.stop()
    before = server.token_requests
    run(2 * lifetime)
    assert not failures, "a call failed because Redis was down"
    during_outage = server.token_requests - before
    assert during_outage >= 2 * 2, "both caches fetched on their own"
    down_warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(down_warnings) == 2 and {r.levelno for r in down_warnings} == {logging.WARNING}

    redis_server.start()
    run(2 * lifetime)  # each cache returns to Redis at its next refresh; then both share again
    assert not failures
    assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 2
    assert caches[0].get_token("idp") == caches[1].get_token("idp")
    before = server.token_requests
    run(3 * 0.75 * lifetime)
    assert not failures
    after_outage = server.token_requests - before
    print(f"outage: {shared} requests shared, {during_outage} while down, {after_outage} after return")
    assert after_outage <= 4, "after Redis returned the caches did not share again"
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2
    secrets = [SECRET, *server.issued_tokens]
    texts = [r.getMessage() for r in caplog.records]
    assert not [s for s in secrets for t in texts if s in t]


def test_unreachable_redis_never_fails_a_call_and_never_logs_its_password(
    server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "hunter2-Redis-pass"
    port = free_port()
    config = redis_config(server, f"redis://app:{password}@127.0.0.1:{port}/0")
    cache = TokenCache(config)
    assert isinstance(cache._store, RedisTokenStore)
    for _ in range(3):
        cache.invalidate("idp")
        assert server.verify_access_token(cache.get_token("idp")) is not None
    assert server.token_requests == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0]
    texts = [r.getMessage() for r in caplog.records] + [repr(cache._store), repr(cache)]
    assert not [t for t in texts if password in t or SECRET in t]


# -- what Redis holds ---------------------------------------------------------------------------


def test_raw_redis_value_holds_neither_token_nor_client_id_and_expires_with_the_token(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = redis_config(server, redis_server.url, expiry_buffer_seconds=60)
    cache = TokenCache(config)
    token = cache.get_token("idp")
    keys = token_keys(redis_db)
    assert len(keys) == 1
    raw = redis_db.get(keys[0])
    assert raw is not None
    everything = b" ".join([raw, *redis_db.keys("*")])
    for clear in (token, "test-client", SECRET, server.token_url, "127.0.0.1"):
        assert clear.encode() not in everything
    assert set(json.loads(raw)) == {"v", "alg", "n", "ct"}
    assert 230_000 < redis_db.pttl(keys[0]) <= 240_000  # usable lifetime: 300 s minus the 60 s buffer
    # Another process (its own store and cache) reads it: no second request.
    other = TokenCache(config, store=make_store(config))
    assert other.get_token("idp") == token
    assert server.token_requests == 1


def test_value_under_another_secret_tampered_or_moved_is_a_miss(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = redis_config(server, redis_server.url)
    settings = config.provider("idp")
    rotated = redis_config(server, redis_server.url, client_secret=OTHER_SECRET).provider("idp")
    store = make_store(config)
    cache = TokenCache(config, store=store)
    token = cache.get(provider="idp")
    key = token_keys(redis_db)[0].decode()
    raw = redis_db.get(key)
    assert store.get(settings.cache_key, settings) is not None

    redis_db.set(key, store._seal(key, token, rotated))  # same key, sealed under another secret
    assert store.get(settings.cache_key, settings) is None
    document = json.loads(raw)
    document["ct"] = ("A" if document["ct"][0] != "A" else "B") + document["ct"][1:]
    for bad in (json.dumps(document), b"garbage", b"{}", b'{"v":1,"token":{"access_token":"x"}}'):
        redis_db.set(key, bad)
        assert store.get(settings.cache_key, settings) is None

    # The same value under another identity's key does not open either (key and AAD differ).
    scoped = redis_config(server, redis_server.url, scope="other").provider("idp")
    other_key = store._keys(scoped.cache_key).token
    redis_db.set(other_key, raw)
    assert store.get(scoped.cache_key, scoped) is None

    # A miss is not an error: the cache fetches a new token and shares it.
    redis_db.set(key, b"garbage")
    fresh = TokenCache(config, store=make_store(config))
    assert server.verify_access_token(fresh.get_token("idp")) is not None
    assert server.token_requests == 2
    assert store.get(settings.cache_key, settings) is not None


def test_two_providers_with_different_secrets_cannot_read_each_others_entries(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = config_of(
        {
            "a": provider_dict(server.token_url),
            "b": provider_dict(server.token_url, client_id="other-client", client_secret=OTHER_SECRET),
        },
        cache={"type": "redis", "url": redis_server.url},
    )
    store = make_store(config)
    cache = TokenCache(config, store=store)
    a, b = config.provider("a"), config.provider("b")
    assert cache.get_token("a") != cache.get_token("b")
    keys = {name: store._keys(s.cache_key).token for name, s in (("a", a), ("b", b))}
    assert {k.encode() for k in keys.values()} == set(token_keys(redis_db))
    # Reading A's entry with B's secret, and B's key holding A's value: both misses.
    assert store.get(a.cache_key, a) is not None
    assert store.get(a.cache_key, b) is None
    redis_db.set(keys["b"], redis_db.get(keys["a"]) or b"")
    assert store.get(b.cache_key, b) is None
    assert store.get(b.cache_key, a) is None


def test_private_key_jwt_providers_encrypt_with_their_key(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    from helpers import rsa_key_pair

    private, public = rsa_key_pair()
    server.add_client("jwt-client", public_key_pem=public)
    config = redis_config(
        server,
        redis_server.url,
        client_id="jwt-client",
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key=private,
    )
    token = TokenCache(config).get_token("idp")
    raw = redis_db.get(token_keys(redis_db)[0]) or b""
    assert token.encode() not in raw and b"jwt-client" not in raw
    assert TokenCache(config, store=make_store(config)).get_token("idp") == token
    assert server.token_requests == 1


def test_encryption_off_stores_plain_json_and_formats_do_not_mix(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    plain = redis_config(server, redis_server.url, encryption=False)
    settings = plain.provider("idp")
    token = TokenCache(plain).get_token("idp")
    raw = redis_db.get(token_keys(redis_db)[0])
    assert raw is not None and json.loads(raw)["token"]["access_token"] == token
    assert TokenCache(plain, store=make_store(plain)).get_token("idp") == token
    encrypted = make_store(redis_config(server, redis_server.url))
    assert encrypted.get(settings.cache_key, settings) is None


def test_invalidate_drops_the_shared_token_only_if_it_is_still_the_same(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer
) -> None:
    config = redis_config(server, redis_server.url)
    first, second = TokenCache(config), TokenCache(config, store=make_store(config))
    token = first.get_token("idp")
    first.invalidate("idp", "some-older-token")
    assert len(token_keys(redis_db)) == 1
    first.invalidate("idp", token)  # a 401: the shared copy goes too, so nobody reuses it
    assert token_keys(redis_db) == []
    renewed = second.get_token("idp")
    assert renewed != token and first.get_token("idp") == renewed
    assert server.token_requests == 2


# -- a Redis that others can write, or that answers nonsense ---------------------------------------

DEPTH = 100_000  # far past the JSON decoder's recursion limit: RecursionError, not ValueError


def nested(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize(
    ("encryption", "poison"),
    [
        (True, nested()),
        (True, b'{"v":1,"alg":"A256GCM","n":' + nested() + b',"ct":""}'),
        (False, b'{"v":1,"token":' + nested() + b"}"),
    ],
    ids=["encrypted-outer", "encrypted-field", "plain-token"],
)
def test_a_poisoned_token_key_is_a_miss_and_calls_keep_working(
    server: TokenServer,
    redis_db: redis.Redis,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    encryption: bool,
    poison: bytes,
) -> None:
    """Only the outer document is reachable by whoever writes Redis: the sealed inner JSON is
    authenticated (AES-GCM) before it is parsed, so the nesting goes in the outer document."""
    caplog.set_level(logging.DEBUG, logger="litellm_oauth2")
    config = redis_config(server, redis_server.url, encryption=encryption)
    first = TokenCache(config, store=make_store(config))
    token = first.get_token("idp")
    (key,) = token_keys(redis_db)
    redis_db.set(key, poison)

    fresh = TokenCache(config, store=make_store(config))
    tokens = [fresh.get_token("idp") for _ in range(5)]
    assert server.token_requests == 2, "one request for the fresh cache, not one failure per call"
    assert len(set(tokens)) == 1 and server.verify_access_token(tokens[0]) is not None
    assert redis_db.get(key) != poison, "the new token replaced the poison"

    redis_db.set(key, poison)
    first.invalidate("idp", token)  # a 401 on the old token reads the poisoned value before deleting
    assert server.verify_access_token(first.get_token("idp")) is not None
    texts = [r.getMessage() for r in caplog.records]
    assert not [t for t in texts for s in (SECRET, *server.issued_tokens) if s in t]
    assert [t for t in texts if "unreadable" in t]


def test_unreadable_values_are_logged_once_per_interval(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="litellm_oauth2")
    config = redis_config(server, redis_server.url)
    settings = config.provider("idp")
    store = make_store(config, retry_interval=0.3)
    TokenCache(config, store=store).get_token("idp")
    (key,) = token_keys(redis_db)
    redis_db.set(key, nested())
    for _ in range(5):
        assert store.get(settings.cache_key, settings) is None
    time.sleep(0.4)
    assert store.get(settings.cache_key, settings) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "RecursionError" in warnings[0].getMessage()
    assert f"127.0.0.1:{redis_server.port}" in warnings[0].getMessage()


class BrokenRedis:
    """A loopback TCP server that speaks RESP well enough to connect, then answers every data
    command with ``reply`` (a malformed RESP frame). Counts the commands it received."""

    HANDSHAKE = frozenset({b"AUTH", b"HELLO", b"CLIENT", b"SELECT", b"PING"})

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.commands: list[bytes] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"redis://app:{REDIS_PASSWORD}@127.0.0.1:{self._listener.getsockname()[1]}/0"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer = b""
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while (command := self._command(buffer)) is not None:
                    name, buffer = command
                    self.commands.append(name)
                    conn.sendall(b"+OK\r\n" if name in self.HANDSHAKE else self.reply)

    @staticmethod
    def _command(buffer: bytes) -> tuple[bytes, bytes] | None:
        """The first command's name and the rest of ``buffer``, or None while it is incomplete."""
        lines = buffer.split(b"\r\n")
        if len(lines) < 2 or not lines[0].startswith(b"*"):
            return None
        count, position, words = int(lines[0][1:]), 1, []
        for _ in range(count):
            if position + 1 >= len(lines):
                return None
            words.append(lines[position + 1])
            position += 2
        if position >= len(lines):
            return None
        return words[0].upper(), b"\r\n".join(lines[position:])


REDIS_PASSWORD = "hunter2-Redis-pass"


@pytest.mark.parametrize(
    "reply",
    [b":notanumber\r\n", b"$abc\r\n", b"*x\r\n", b":5\r\n"],
    ids=["integer", "bulk-length", "array-length", "integer-for-every-reply"],
)
def test_a_server_speaking_broken_resp_is_a_miss_and_calls_keep_working(
    server: TokenServer, caplog: pytest.LogCaptureFixture, reply: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    broken = BrokenRedis(reply)
    try:
        config = redis_config(server, broken.url)
        cache = TokenCache(config, store=make_store(config, retry_interval=60))
        tokens = [cache.get_token("idp") for _ in range(5)]
        cache.invalidate("idp", tokens[0])
        tokens.append(cache.get_token("idp"))
    finally:
        broken.close()
    assert server.token_requests == 2, "one request, and one after the invalidation: no failures"
    assert all(server.verify_access_token(t) is not None for t in tokens)
    assert [c for c in broken.commands if c not in BrokenRedis.HANDSHAKE], "the store did talk to it"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) <= 1
    texts = [r.getMessage() for r in caplog.records] + [repr(cache._store)]
    assert not [t for t in texts for s in (SECRET, REDIS_PASSWORD, *server.issued_tokens) if s in t]


# -- configuration -------------------------------------------------------------------------------


def test_redis_url_from_the_environment(
    server: TokenServer, redis_db: redis.Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_OAUTH2_TEST_REDIS_URL", redis_server.url)
    config = redis_config(server, "os.environ/LITELLM_OAUTH2_TEST_REDIS_URL")
    first, second = TokenCache(config), TokenCache(config)
    assert isinstance(first._store, RedisTokenStore) and first._store is not second._store
    assert first.get_token("idp") == second.get_token("idp")
    assert len(token_keys(redis_db)) == 1 and server.token_requests == 1
    assert redis_server.url not in repr(first._store)  # host:port only
    assert f"127.0.0.1:{redis_server.port}" in repr(first._store)


def test_missing_redis_package_is_a_configuration_error_naming_the_extra(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "litellm_oauth2.redis_store", raising=False)
    config = redis_config(server, "redis://127.0.0.1:6379/0")
    with pytest.raises(
        OAuth2ConfigurationError, match=r"needs the redis extra: pip install redis cryptography"
    ):
        TokenCache(config)


def test_default_config_never_imports_redis() -> None:
    script = """
import sys
from litellm_oauth2.cache import PROCESS_STORE, TokenCache
from litellm_oauth2.config import OAuth2Config
config = OAuth2Config.model_validate({"oauth2_providers": {"idp": {
    "provider_name": "idp", "client_id": "c", "client_secret": "s", "token_url": "https://idp.example/token"}}})
cache = TokenCache(config)
assert cache._store is PROCESS_STORE
loaded = sorted(m for m in sys.modules if m == "redis" or m.startswith(("redis.", "litellm_oauth2.redis")))
assert not loaded, loaded
print("ok")
"""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("LITELLM_OAUTH2_CONFIG", None)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
