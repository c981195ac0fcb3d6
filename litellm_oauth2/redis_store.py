"""Tokens shared through Redis by every worker and replica: one token request per lifetime in total.

Enabled by ``"cache": {"type": "redis", "url": "redis://host:6379/0", "key_prefix": "litellm_oauth2:",
"encryption": true}``; needs the ``redis`` extra (``pip install -e '.[redis]'`` in a clone). The
``TokenCache`` keeps its in-process copy in front: a local hit never touches the network, Redis is
only consulted on the slow path (cold start, refresh, expiry).

What Redis holds, per token identity (``ProviderSettings.cache_key``):

* ``<prefix>token:<h>`` with ``h = sha256("litellm-oauth2 redis key v1" + cache_key)``: neither the
  client id nor any URL appears in a key. The value is ``{"v": 1, "alg": "A256GCM", "n": nonce,
  "ct": ciphertext}``: the token (access token, type, wall-clock expiry, lifetime, scope; never a
  refresh token) sealed with AES-256-GCM under ``HKDF-SHA256(the cache's encryption_key when set,
  else the client secret, the private key PEM for private_key_jwt, or the client certificate's key
  file and password for mTLS (``ProviderSettings.sealing_material``; client_assertion providers need
  encryption_key); salt = cache key; info = "litellm-oauth2 token cache v1")``, the Redis key
  as associated data so a value cannot be moved to another key. Reading Redis without holding the
  client secret gives nothing usable. A value that does not decrypt or parse (another secret,
  tampering, another format, JSON nested past the decoder's recursion limit) is a miss, never an
  error, logged as a WARNING at most once per ``retry_interval``. With ``"encryption": false`` the value is the token
  JSON in clear, ``{"v": 1, "token": {...}}``: anyone who can read Redis can use the tokens.
  The key's TTL is the token's usable lifetime, so stale entries vanish on their own.
* ``<prefix>lock:<h>``: the cross-process single flight. ``SET NX PX`` with a random owner; a live
  holder renews the lease every third of it, a holder that dies stops renewing and the lock
  expires (``lock_lease_seconds``, 5 s by default); release is a compare-and-delete script.
  Waiters poll (10 ms doubling to 200 ms) and stop waiting as soon as another process stored a
  new token; one that waited longer than the longest possible token request (timeouts, retries and
  their delays) fetches by itself rather than hang.

Redis being down is not an outage: any Redis error (including a reply redis-py cannot parse, which
it raises as a bare ``ValueError``) makes the store skip Redis for
``retry_interval`` seconds (a miss, a no-op write, an in-process lock), logged once as a WARNING
per outage, then Redis is tried again and "reachable again" logged at INFO. Tokens then come from
the in-process cache and the token endpoint, one fetch per process.

The store uses redis-py's synchronous client with short socket timeouts (0.5 s): ``TokenCache``
calls its store only from fetch worker threads or from synchronous callers, never on an event
loop, so the asyncio client is not needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar
from urllib.parse import urlsplit

import redis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._fork import reset_in_forked_child
from .cache import Lifecycle, max_fetch_seconds
from .client import Token
from .config import ProviderSettings, RedisCacheSettings
from .errors import OAuth2ConfigurationError

__all__ = [
    "RedisTokenStore",
]

logger = logging.getLogger("litellm_oauth2")

SOCKET_TIMEOUT_SECONDS = 0.5
RETRY_INTERVAL_SECONDS = 5.0
LOCK_LEASE_SECONDS = 5.0
MAX_LOCK_WAIT_SECONDS = 120.0
POLL_INITIAL_SECONDS = 0.01
POLL_MAX_SECONDS = 0.2
FORMAT_VERSION = 1
KEY_LABEL = b"litellm-oauth2 redis key v1\x00"
HKDF_INFO = b"litellm-oauth2 token cache v1"

# KEYS[1] = lock, ARGV[1] = owner: delete only our own lock.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# KEYS[1] = lock, ARGV[1] = owner, ARGV[2] = lease ms: renew only our own lock.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] = token, ARGV[1] = the value read: delete only if nobody replaced it meanwhile.
_DELETE_IF = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_T = TypeVar("_T")
_UNSET = object()


class _Unavailable(Exception):
    """Redis is down (or in the pause after a failure): the caller falls back to this process."""


@dataclass(frozen=True, slots=True)
class _Keys:
    token: str
    lock: str


class _Lease:
    """Our hold on a Redis lock: renewed by a daemon thread until released, so only death expires it."""

    def __init__(self, store: RedisTokenStore, keys: _Keys, owner: str) -> None:
        self._store = store
        self._keys = keys
        self._owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="litellm-oauth2-redis-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        store = self._store
        lease_ms = store.lease_ms
        while not self._stop.wait(store.lock_lease_seconds / 3):
            try:
                renewed = store._run(
                    lambda _: store._renew_script(keys=[self._keys.lock], args=[self._owner, lease_ms])
                )
            except _Unavailable:
                continue
            if not renewed:
                return  # expired and possibly taken by another process: nothing left to renew

    def release(self) -> None:
        self._stop.set()
        with suppress(_Unavailable):  # if Redis is down, the lease expires on its own
            self._store._run(
                lambda _: self._store._release_script(keys=[self._keys.lock], args=[self._owner])
            )


class RedisTokenStore:
    """A ``TokenStore`` in Redis: tokens and the fetch lock shared by every process using ``settings.url``.

    ``retry_interval``: seconds Redis is left alone after a failure. ``lock_lease_seconds``: how
    long the lock of a process that died keeps others waiting. ``socket_timeout``: connect and
    per-command timeout.
    """

    def __init__(
        self,
        settings: RedisCacheSettings,
        *,
        retry_interval: float = RETRY_INTERVAL_SECONDS,
        lock_lease_seconds: float = LOCK_LEASE_SECONDS,
        socket_timeout: float = SOCKET_TIMEOUT_SECONDS,
    ) -> None:
        self.key_prefix = settings.key_prefix
        self.encryption = settings.encryption
        self._encryption_key = settings.encryption_key
        self.retry_interval = retry_interval
        self.lock_lease_seconds = lock_lease_seconds
        self.lease_ms = max(1, math.ceil(lock_lease_seconds * 1000))
        self._url = settings.url
        self._socket_timeout = socket_timeout
        self._where = _describe(settings.url.get_secret_value())
        try:
            self._connect()
        except (ValueError, TypeError) as exc:
            raise OAuth2ConfigurationError(
                f"cache: field 'url' is not a usable Redis URL ({type(exc).__name__}); "
                "expected redis://[user:password@]host:port/db, rediss://... or unix:///path"
            ) from None
        self._guard = threading.Lock()
        self._local_locks: dict[str, threading.Lock] = {}
        self._aead: dict[str, AESGCM] = {}
        self._down_until = 0.0
        self._outage = False
        self._quiet_until = 0.0
        reset_in_forked_child(self)

    def _connect(self) -> None:
        # No client-side retries: a failure falls back at once, the outage pause does the rest.
        # Typed Any: redis-py's annotations differ between 5.x and 8.x (sync/async result unions);
        # every value read back is checked where it is used.
        self._client: Any = redis.Redis.from_url(
            self._url.get_secret_value(),
            socket_connect_timeout=self._socket_timeout,
            socket_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._release_script = self._client.register_script(_RELEASE)
        self._renew_script = self._client.register_script(_RENEW)
        self._delete_script = self._client.register_script(_DELETE_IF)

    def _after_fork_in_child(self) -> None:
        """A forked child: the parent's connections are not its own, and its lock holders are gone."""
        self._connect()
        self._guard = threading.Lock()
        self._local_locks = {}

    def __repr__(self) -> str:
        return (
            f"RedisTokenStore(redis={self._where!r}, key_prefix={self.key_prefix!r}, "
            f"encryption={self.encryption})"
        )

    def close(self) -> None:
        """Close the connection pool (a later call reconnects)."""
        self._client.close()

    # -- TokenStore --------------------------------------------------------------------------------

    def get(self, key: str, settings: ProviderSettings) -> Token | None:
        """The shared token, or ``None``: absent, expired, unreadable or Redis unavailable."""
        keys = self._keys(key)
        try:
            raw = self._run(lambda r: r.get(keys.token))
        except _Unavailable:
            return None
        if not isinstance(raw, bytes | str):
            return None
        return self._open(keys.token, raw, settings)

    def set(self, key: str, token: Token, settings: ProviderSettings) -> None:
        """Share ``token`` until it stops being usable (the key's TTL); a no-op while Redis is down."""
        ttl = Lifecycle.of(token, settings.expiry_buffer_seconds).usable_until - time.monotonic()
        ttl_ms = math.floor(ttl * 1000)
        if ttl_ms <= 0:
            return
        keys = self._keys(key)
        value = self._seal(keys.token, token, settings)
        with suppress(_Unavailable):
            self._run(lambda r: r.set(keys.token, value, px=ttl_ms))

    def delete(self, key: str, access_token: str | None, settings: ProviderSettings) -> None:
        """Drop the shared token, but only if it is still ``access_token`` (or unconditionally for None)."""
        keys = self._keys(key)
        try:
            if access_token is None:
                self._run(lambda r: r.delete(keys.token))
                return
            raw = self._run(lambda r: r.get(keys.token))
            if not isinstance(raw, bytes | str):
                return
            current = self._open(keys.token, raw, settings)
            if current is None or current.access_token.get_secret_value() == access_token:
                self._run(lambda _: self._delete_script(keys=[keys.token], args=[raw]))
        except _Unavailable:
            pass

    @contextmanager
    def lock(self, key: str, settings: ProviderSettings) -> Iterator[None]:
        """Exclusive among all processes while Redis answers; in-process only while it does not.

        Also returns (without the Redis lock) as soon as another process stores a new token, or
        after waiting longer than any token request of ``settings`` can take.
        """
        with self._guard:
            local = self._local_locks.setdefault(key, threading.Lock())
        with local:
            lease = self._acquire(self._keys(key), settings)
            try:
                yield
            finally:
                if lease is not None:
                    lease.release()

    # -- the Redis lock ----------------------------------------------------------------------------

    def _acquire(self, keys: _Keys, settings: ProviderSettings) -> _Lease | None:
        owner = secrets.token_hex(16)
        started = time.monotonic()
        deadline = started + min(max_fetch_seconds(settings), MAX_LOCK_WAIT_SECONDS)
        delay = POLL_INITIAL_SECONDS
        seen: object = _UNSET
        while True:

            def attempt(r: Any) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                pipe.set(keys.lock, owner, nx=True, px=self.lease_ms)
                pipe.get(keys.token)
                replies = list(pipe.execute())
                if not isinstance(replies[1], bytes | None):  # not Redis: never wait on it
                    raise TypeError(f"GET answered {type(replies[1]).__name__}")
                return replies

            try:
                acquired, current = self._run(attempt)
            except _Unavailable:
                return None
            if acquired:
                return _Lease(self, keys, owner)
            if seen is _UNSET:
                seen = current
            elif current is not None and current != seen:
                return None  # the holder stored a fresh token: read it without the lock
            now = time.monotonic()
            if now >= deadline:
                logger.warning(
                    "provider %s: waited %.1f s for another process's token request; requesting here",
                    settings.provider_name,
                    now - started,
                    extra={"provider": settings.provider_name, "event": "shared_lock_wait_expired"},
                )
                return None
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, POLL_MAX_SECONDS)

    # -- Redis calls and outages ---------------------------------------------------------------------

    def _run(self, operation: Callable[[Any], _T]) -> _T:
        """Run one Redis operation, or raise ``_Unavailable`` (Redis down now or paused after a failure)."""
        if self._down_until and time.monotonic() < self._down_until:
            raise _Unavailable
        try:
            result = operation(self._client)
        except Exception as exc:  # a malformed reply is a bare ValueError, not a RedisError
            self._went_down(exc)
            raise _Unavailable from None
        if self._outage:
            self._came_back()
        return result

    def _went_down(self, exc: BaseException) -> None:
        with self._guard:
            self._down_until = time.monotonic() + self.retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning(
                "Redis token cache at %s unreachable or failing (%s), falling back to per-process "
                "tokens; trying Redis again every %g s",
                self._where,
                type(exc).__name__,
                self.retry_interval,
                extra={"provider": None, "event": "redis_unavailable"},
            )

    def _came_back(self) -> None:
        with self._guard:
            was_down = self._outage
            self._outage = False
            self._down_until = 0.0
        if was_down:
            logger.info(
                "Redis token cache at %s reachable again, sharing tokens",
                self._where,
                extra={"provider": None, "event": "redis_available"},
            )

    # -- keys and values ---------------------------------------------------------------------------

    def _keys(self, cache_key: str) -> _Keys:
        digest = hashlib.sha256(KEY_LABEL + cache_key.encode()).hexdigest()
        return _Keys(token=f"{self.key_prefix}token:{digest}", lock=f"{self.key_prefix}lock:{digest}")

    def _seal(self, redis_key: str, token: Token, settings: ProviderSettings) -> bytes:
        payload = json.dumps(
            {
                "access_token": token.access_token.get_secret_value(),
                "token_type": token.token_type,
                "expires_at_wall": token.expires_at_wall,
                "lifetime": token.lifetime,
                "scope": token.scope,
            },
            separators=(",", ":"),
        ).encode()
        if not self.encryption:
            return b'{"v":1,"token":' + payload + b"}"
        nonce = os.urandom(12)
        sealed = self._cipher(settings).encrypt(nonce, payload, redis_key.encode())
        document = {"v": FORMAT_VERSION, "alg": "A256GCM", "n": _b64(nonce), "ct": _b64(sealed)}
        return json.dumps(document, separators=(",", ":")).encode()

    def _open(self, redis_key: str, raw: bytes | str, settings: ProviderSettings) -> Token | None:
        """The token in ``raw``, or ``None`` for anything unreadable (never an exception)."""
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("v") != FORMAT_VERSION:
                return None
            if self.encryption:
                if document.get("alg") != "A256GCM":
                    return None
                nonce = base64.b64decode(document["n"], validate=True)
                sealed = base64.b64decode(document["ct"], validate=True)
                data = json.loads(self._cipher(settings).decrypt(nonce, sealed, redis_key.encode()))
            else:
                data = document.get("token")
            return _token_from(data)
        except Exception as exc:  # whoever can write Redis chooses the value
            self._unreadable(settings, exc)
            return None

    def _unreadable(self, settings: ProviderSettings, exc: Exception) -> None:
        """Log an unreadable value: a WARNING once per ``retry_interval``, DEBUG in between."""
        with self._guard:
            now = time.monotonic()
            loud = now >= self._quiet_until
            if loud:
                self._quiet_until = now + self.retry_interval
        logger.log(
            logging.WARNING if loud else logging.DEBUG,
            "provider %s: treating the unreadable token in Redis at %s as absent (%s; written under "
            "another secret or format, or tampered with)",
            settings.provider_name,
            self._where,
            type(exc).__name__,
            extra={"provider": settings.provider_name, "event": "shared_token_unreadable"},
        )

    def _cipher(self, settings: ProviderSettings) -> AESGCM:
        key = settings.cache_key
        aead = self._aead.get(key)
        if aead is None:
            material = (
                self._encryption_key.get_secret_value().encode()
                if self._encryption_key is not None
                else settings.sealing_material()
            )
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=key.encode(), info=HKDF_INFO).derive(
                material
            )
            aead = self._aead[key] = AESGCM(derived)
        return aead


def _token_from(data: object) -> Token | None:
    if not isinstance(data, dict):
        return None
    access_token, token_type = data.get("access_token"), data.get("token_type")
    expires_at_wall, lifetime, scope = data.get("expires_at_wall"), data.get("lifetime"), data.get("scope")
    if not (isinstance(access_token, str) and access_token and isinstance(token_type, str)):
        return None
    if not _is_number(expires_at_wall) or not _is_number(lifetime) or lifetime <= 0:
        return None
    if scope is not None and not isinstance(scope, str):
        return None
    remaining = expires_at_wall - time.time()
    if remaining <= 0:
        return None
    return Token(
        access_token=SecretStr(access_token),
        token_type=token_type,
        expires_at=time.monotonic() + remaining,
        expires_at_wall=float(expires_at_wall),
        lifetime=float(lifetime),
        scope=scope,
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _describe(url: str) -> str:
    """host:port (or the socket path) of a Redis URL: never the user name or password in it."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path or "unix socket"
        host = parts.hostname or "localhost"
        return f"[{host}]:{parts.port or 6379}" if ":" in host else f"{host}:{parts.port or 6379}"
    except ValueError:
        return "the configured Redis"
