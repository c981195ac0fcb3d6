"""The token cache every LLM call goes through.

Hot path: one dict lookup, one monotonic clock read, one comparison; no lock. Everything else
(cold start, expiry, refresh ahead, failures) happens on a slow path where exactly one fetch per
token identity runs at a time and every other caller, thread or asyncio task, waits for it.

Token life, with ``L`` the lifetime granted and ``B = min(expiry_buffer_seconds, L / 4)``:

* usable until ``expires_at - B`` (the hard limit: past it the token is never handed out);
* fresh until the refresh window opens, ``W = min(max(usable / 4, expiry_buffer_seconds), usable / 2)``
  before the hard limit. Inside the window the token is still returned at once and one
  background refresh starts, so under steady load no call waits on the identity provider.

A background refresh that fails keeps the still-valid token in service, logs a WARNING and is
tried again after a backoff (1 s doubling to 30 s, never past the hard limit). A fetch that a
caller had to wait for and that failed is remembered for ``NEGATIVE_CACHE_SECONDS``: callers in
that window get the same error at once instead of hammering an identity provider that is down.

Load on the identity provider stays bounded, per token identity and process, whatever the
identity provider or the gateway says:

* a lifetime under ``MIN_TOKEN_LIFETIME_SECONDS`` (1 s; ``expires_in: 1e-6``) is used as if it were
  1 s, with no buffer: refreshed after 0.75 s, never handed out after 1 s; one WARNING per identity.
  At most about one token request per 0.75 s. Real identity providers issue minutes to hours, and
  the test servers and the demo 1 to 4 s tokens, which the floor leaves untouched.
* ``invalidate(provider, token)`` (a 401 from the gateway) drops a token at most once per
  ``REFETCH_AFTER_401_SECONDS`` (5 s): a gateway refusing every token costs one token request
  per 5 s, not one per call. An ``invalidate`` without a token (the user's own call) always drops.

Only ``Exception``s are shared with waiting callers or remembered. A ``KeyboardInterrupt`` or
``SystemExit`` raised during a fetch stays in the thread it hit; the callers waiting on that fetch
start another one. No wait is unbounded: a caller waits for a fetch at most twice its longest
possible duration (``max_fetch_seconds``: every attempt timing out, every retry delay at its cap)
plus ``STORE_SLACK_SECONDS``, then gets an ``OAuth2AuthenticationError``. A forked child starts
with no fetch in flight, new locks and new HTTP connections, keeping the tokens it inherited.

Every slow-path outcome becomes a ``metrics.CacheEvent``: ``stats()`` and ``health()`` read
what they add up to, ``subscribe`` passes them on to exporters. A refresh failing for more than
half of the token's usable life logs an ERROR, again every further half life while it fails.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Protocol, overload

from ._fork import reset_in_forked_child
from ._refresher import Refresher
from .client import Token, TokenClient
from .config import OAuth2Config, ProviderSettings, RedisCacheSettings, _unknown_provider
from .errors import OAuth2AuthenticationError, OAuth2ConfigurationError, OAuth2Error
from .metrics import CacheEvent, EventKind, Listener, MetricsRecorder, Outcome, ProviderHealth, ProviderStats

__all__ = [
    "MIN_TOKEN_LIFETIME_SECONDS",
    "NEGATIVE_CACHE_SECONDS",
    "REFETCH_AFTER_401_SECONDS",
    "InMemoryTokenStore",
    "Lifecycle",
    "TokenCache",
    "TokenStore",
    "max_fetch_seconds",
]

if TYPE_CHECKING:
    from .redis_store import RedisTokenStore

logger = logging.getLogger("litellm_oauth2")

_monotonic = time.monotonic  # bound once: the hot path reads the clock on every call

NEGATIVE_CACHE_SECONDS = 1.0
REFRESH_BACKOFF_INITIAL = 1.0
REFRESH_BACKOFF_MAX = 30.0
MIN_TOKEN_LIFETIME_SECONDS = 1.0
REFETCH_AFTER_401_SECONDS = 5.0
STORE_SLACK_SECONDS = 5.0
CLOSE_WAIT_SECONDS = 1.0


def max_fetch_seconds(settings: ProviderSettings) -> float:
    """The longest one ``TokenClient.fetch`` can take: every attempt timing out, every delay at its cap."""
    retry = settings.retry
    return settings.timeout_seconds * (retry.attempts + 1) + retry.attempts * retry.max_delay + 1.0


class TokenStore(Protocol):
    """Where fetched tokens are kept beyond one ``TokenCache``: this process, or Redis for many.

    ``lock`` serialises fetches for one key among everyone sharing the store; ``get`` after the
    lock is taken tells whether someone else already fetched.
    """

    def get(self, key: str, settings: ProviderSettings) -> Token | None: ...

    def set(self, key: str, token: Token, settings: ProviderSettings) -> None: ...

    def delete(self, key: str, access_token: str | None, settings: ProviderSettings) -> None: ...

    def lock(self, key: str, settings: ProviderSettings) -> AbstractContextManager[None]: ...


class InMemoryTokenStore:
    """Tokens shared by every ``TokenCache`` of this process (for example two handlers on one config)."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        self._locks = {}
        self._guard = threading.Lock()

    def get(self, key: str, settings: ProviderSettings) -> Token | None:
        return self._tokens.get(key)

    def set(self, key: str, token: Token, settings: ProviderSettings) -> None:
        self._tokens[key] = token

    def delete(self, key: str, access_token: str | None, settings: ProviderSettings) -> None:
        with self._guard:
            current = self._tokens.get(key)
            if current is not None and access_token in (None, current.access_token.get_secret_value()):
                del self._tokens[key]

    @contextmanager
    def lock(self, key: str, settings: ProviderSettings) -> Iterator[None]:
        """Exclusive for ``key``, except towards a holder that took longer than any fetch can."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        held = lock.acquire(timeout=max_fetch_seconds(settings))
        try:
            yield
        finally:
            if held:
                lock.release()


PROCESS_STORE = InMemoryTokenStore()


def _redis_store(settings: RedisCacheSettings) -> RedisTokenStore:
    """A ``RedisTokenStore``; imported only here, so the default in-memory cache never loads ``redis``."""
    try:
        from .redis_store import RedisTokenStore
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("redis", "cryptography"):
            raise
        raise OAuth2ConfigurationError(
            "cache: type 'redis' needs the redis extra: pip install redis cryptography "
            "(or, in a clone of litellm-oauth2: pip install -e '.[redis]')",
            original_error=exc,
        ) from None
    return RedisTokenStore(settings)


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """When a token must be refreshed and when it may no longer be used, on the monotonic clock."""

    refresh_at: float
    usable_until: float

    @classmethod
    def of(cls, token: Token, expiry_buffer_seconds: float) -> Lifecycle:
        obtained_at = token.expires_at - token.lifetime
        if token.lifetime < MIN_TOKEN_LIFETIME_SECONDS:
            floor = MIN_TOKEN_LIFETIME_SECONDS
            return cls(refresh_at=obtained_at + 0.75 * floor, usable_until=obtained_at + floor)
        buffer = min(expiry_buffer_seconds, token.lifetime / 4)
        usable_until = token.expires_at - buffer
        usable = usable_until - obtained_at
        window = min(max(usable / 4, expiry_buffer_seconds), usable / 2)
        return cls(refresh_at=usable_until - window, usable_until=usable_until)


class _Cached:
    """What the hot path reads: replaced whole, never mutated, so readers need no lock."""

    __slots__ = ("access_token", "authorization", "refresh_at", "token", "usable_until")

    def __init__(self, token: Token, lifecycle: Lifecycle) -> None:
        self.access_token = token.access_token.get_secret_value()
        self.authorization = "Bearer " + self.access_token
        self.refresh_at = lifecycle.refresh_at
        self.usable_until = lifecycle.usable_until
        self.token = token

    def __repr__(self) -> str:
        return f"_Cached(usable_for={self.usable_until - time.monotonic():.1f}s)"


class _Slot:
    """One token identity (cache key): its cached token and its single in-flight fetch."""

    def __init__(
        self,
        key: str,
        settings: ProviderSettings,
        client: TokenClient,
        by_provider: dict[str, _Cached],
        recorder: MetricsRecorder,
    ) -> None:
        self.key = key
        self.settings = settings
        self.client = client
        self.providers: list[str] = []
        self.cached: _Cached | None = None
        self._by_provider = by_provider
        self.lock = threading.Lock()
        self.flight: Future[_Cached] | None = None
        self.failure: tuple[Exception, float] | None = None
        self.next_background_at = 0.0
        self.background_failures = 0
        self.invalidated_at = float("-inf")
        self.hold_logged_at = float("-inf")
        self.short_lifetime_logged = False
        # Runs this identity's background refreshes and asyncio callers' fetches (one thread, started
        # by the first cold fetch); its own fork hook gives a forked child a new one on demand.
        self.refresher = Refresher(f"litellm-oauth2-fetch-{settings.provider_name}")
        self.recorder = recorder
        # Health: monotonic and wall time of the first failed fetch since the last success.
        self.failing_since: tuple[float, float] | None = None
        self.last_failure: tuple[float, str] | None = None  # wall time, message
        self.failing_logged_at = float("-inf")
        self.usable_life = 0.0  # of the last token obtained
        client.on_request = self.report_request

    def emit(self, kind: EventKind) -> None:
        self.recorder.emit(CacheEvent(kind, self.settings.provider_name))

    def report_request(self, outcome: Outcome, seconds: float) -> None:
        self.recorder.emit(CacheEvent("token_request", self.settings.provider_name, outcome, seconds))

    def after_fork(self) -> None:
        """In a forked child: the parent's fetch and the threads holding ``lock`` do not exist."""
        self.lock = threading.Lock()
        self.flight = None
        self.failure = None
        self.next_background_at = 0.0
        self.background_failures = 0

    def land(self, flight: Future[_Cached]) -> None:
        """``flight`` has ended (called under ``lock``); a newer one, after a fork or a give-up, stays."""
        if self.flight is flight:
            self.flight = None

    def publish(self, cached: _Cached | None) -> None:
        """Replace the cached token, also in the hot path's per-provider view (called under ``lock``)."""
        self.cached = cached
        for provider in self.providers:
            if cached is None:
                self._by_provider.pop(provider, None)
            else:
                self._by_provider[provider] = cached
        if cached is not None:
            self.usable_life = cached.usable_until - (cached.token.expires_at - cached.token.lifetime)


class TokenCache:
    """Thread- and asyncio-safe tokens for every configured provider, fetched once per identity."""

    def __init__(
        self,
        config: OAuth2Config,
        *,
        store: TokenStore | None = None,
        clients: Mapping[str, TokenClient] | None = None,
    ) -> None:
        # Closed by close(): only a store this cache opened, never the caller's or PROCESS_STORE.
        self._opened_store: RedisTokenStore | None = None
        if store is None and isinstance(config.cache, RedisCacheSettings):
            store = self._opened_store = _redis_store(config.cache)
        self._store: TokenStore = store if store is not None else PROCESS_STORE
        # What the hot path reads: provider name -> its cached token, whichever slot it shares.
        self._fresh: dict[str, _Cached] = {}
        self._recorder = MetricsRecorder(_log_listener_error)
        by_key: dict[str, _Slot] = {}
        self._slots: dict[str, _Slot] = {}
        for name, settings in config.oauth2_providers.items():
            key = settings.cache_key
            if key not in by_key:
                client = (clients or {}).get(name) or TokenClient(settings)
                by_key[key] = _Slot(key, settings, client, self._fresh, self._recorder)
            by_key[key].providers.append(name)
            self._slots[name] = by_key[key]
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        for slot in set(self._slots.values()):
            slot.after_fork()

    def __repr__(self) -> str:
        return f"TokenCache(providers={sorted(self._slots)!r})"

    def get_token(self, provider: str) -> str:
        """A usable access token for ``provider``; blocks only when none is cached."""
        cached = self._fresh.get(provider)
        if cached is not None and _monotonic() < cached.refresh_at:
            return cached.access_token
        return self._slow_get(provider).access_token

    def get_authorization(self, provider: str) -> str:
        """The ``Authorization`` header value, ``Bearer <token>``: built once per token, not per call."""
        cached = self._fresh.get(provider)
        if cached is not None and _monotonic() < cached.refresh_at:
            return cached.authorization
        return self._slow_get(provider).authorization

    async def aget_token(self, provider: str) -> str:
        """``get_token`` for asyncio: waiting for a fetch never blocks the event loop."""
        return (await self._aget(provider)).access_token

    async def aget_authorization(self, provider: str) -> str:
        """``get_authorization`` for asyncio."""
        return (await self._aget(provider)).authorization

    def get(self, provider: str) -> Token:
        """The full ``Token`` (scope, expiry) for ``provider``; same caching as ``get_token``."""
        return self._slow_get(provider).token

    def invalidate(self, provider: str, token: str | None = None) -> bool:
        """Drop the cached token, but only if it is still ``token`` (a burst of 401s refetches once).

        With ``token`` (the gateway refused it), at most once per ``REFETCH_AFTER_401_SECONDS``:
        a gateway refusing every token must not turn each call into a token request. Returns
        whether the token was dropped, so a caller knows whether retrying can help.
        """
        slot = self._slot(provider)
        with slot.lock:
            if slot.cached is None or token not in (None, slot.cached.access_token):
                return False
            now = time.monotonic()
            if token is not None and now - slot.invalidated_at < REFETCH_AFTER_401_SECONDS:
                first_hold = slot.hold_logged_at < slot.invalidated_at
                slot.hold_logged_at = now
            else:
                first_hold = None
                slot.invalidated_at = now
                slot.publish(None)
                slot.failure = None
        if first_hold is not None:
            if first_hold:
                logger.warning(
                    "provider %s: the gateway also refused the token requested after its refusal "
                    "%.1f s ago; keeping it: at most one token request per %g s after refusals",
                    provider,
                    now - slot.invalidated_at,
                    REFETCH_AFTER_401_SECONDS,
                    extra={"provider": provider, "event": "refetch_after_401_held"},
                )
            return False
        if token is not None:
            slot.emit("invalidated_after_401")
        # Outside the slot lock, which asyncio callers take on their event loop thread.
        self._store.delete(slot.key, token, slot.settings)
        logger.info(
            "provider %s: cached token invalidated",
            provider,
            extra={"provider": provider, "event": "token_invalidated"},
        )
        return True

    @overload
    def stats(self) -> dict[str, ProviderStats]: ...

    @overload
    def stats(self, provider: str) -> ProviderStats: ...

    def stats(self, provider: str | None = None) -> dict[str, ProviderStats] | ProviderStats:
        """Counters per token identity, keyed by the first provider configured for it; or, given
        ``provider``, those of its identity.

        ``ProviderStats.providers`` names every provider sharing the identity. A snapshot, cheap
        (a lock per identity, no I/O): exporters take one at each scrape.

        Raises:
            OAuth2ConfigurationError: ``provider`` is not configured.
        """
        if provider is not None:
            return self._snapshot(self._slot(provider))
        return {slot.settings.provider_name: self._snapshot(slot) for slot in self._identities()}

    def _snapshot(self, slot: _Slot) -> ProviderStats:
        left = _seconds_left(slot.cached, time.monotonic())
        return self._recorder.snapshot(slot.settings.provider_name, tuple(slot.providers), left)

    def health(self) -> dict[str, ProviderHealth]:
        """Per configured provider: whether a usable token is held, for how long, since when fetches fail."""
        now = time.monotonic()
        result: dict[str, ProviderHealth] = {}
        for provider, slot in self._slots.items():
            left = _seconds_left(slot.cached, now)
            failure = slot.last_failure
            result[provider] = ProviderHealth(
                provider=provider,
                token_held=left is not None,
                seconds_until_expiry=left,
                failing_since=slot.failing_since[1] if slot.failing_since else None,
                last_refresh_failure_at=failure[0] if failure else None,
                last_error=failure[1] if failure else None,
            )
        return result

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every ``CacheEvent`` from now on.

        It runs in the thread that hit the slow path, sometimes holding the identity's lock:
        it must return quickly and must not ask this cache for a token. What it raises is
        logged and ignored.
        """
        self._recorder.subscribe(listener)

    def _identities(self) -> list[_Slot]:
        """Each slot once, in the order its first provider was configured."""
        return list(dict.fromkeys(self._slots.values()))

    def close(self) -> None:
        """Stop the refresher threads, close the token clients' connections, and the Redis store if
        this cache opened it. A later call starts what it needs again."""
        for slot in set(self._slots.values()):
            # One in a token request ends with it (a daemon, so never holding up exit); no longer wait.
            slot.refresher.stop(timeout=CLOSE_WAIT_SECONDS)
            slot.client.close()
        if self._opened_store is not None:
            self._opened_store.close()

    async def _aget(self, provider: str) -> _Cached:
        cached = self._fresh.get(provider)
        if cached is not None and _monotonic() < cached.refresh_at:
            return cached
        slot = self._slot(provider)
        try:
            try:
                return await self._await(slot, self._usable_or_flight(slot, wait_ok=True))
            except _Interrupted:  # in the fetching thread only: this caller tries once more
                return await self._await(slot, self._usable_or_flight(slot, wait_ok=True))
        except OAuth2Error as exc:
            if exc.provider in (None, provider):
                raise
            raise _as_seen_by(exc, provider) from None

    async def _await(self, slot: _Slot, ready: _Cached | Future[_Cached]) -> _Cached:
        """The flight's token; cancelling this caller never cancels the flight others wait for."""
        if isinstance(ready, _Cached):
            return ready
        try:
            return await asyncio.wait_for(asyncio.wrap_future(ready), _flight_wait_seconds(slot.settings))
        except TimeoutError:
            raise self._give_up(slot, ready) from None

    # -- slow path -------------------------------------------------------------------------------

    def _slot(self, provider: str) -> _Slot:
        try:
            return self._slots[provider]
        except KeyError:
            raise _unknown_provider(provider, self._slots) from None

    def _slow_get(self, provider: str) -> _Cached:
        slot = self._slot(provider)
        try:
            try:
                return self._wait(slot, self._usable_or_flight(slot, wait_ok=False))
            except _Interrupted:  # in the fetching thread only: this caller tries once more
                return self._wait(slot, self._usable_or_flight(slot, wait_ok=False))
        except OAuth2Error as exc:
            if exc.provider in (None, provider):
                raise
            raise _as_seen_by(exc, provider) from None

    def _wait(self, slot: _Slot, ready: _Cached | Future[_Cached]) -> _Cached:
        if isinstance(ready, _Cached):
            return ready
        try:
            return ready.result(timeout=_flight_wait_seconds(slot.settings))
        except TimeoutError:
            raise self._give_up(slot, ready) from None

    def _give_up(self, slot: _Slot, flight: Future[_Cached]) -> OAuth2AuthenticationError:
        """A flight outlived any fetch: forget it, so the next call starts a new one, and retire the
        refresher that may be stuck in it (it ends after that fetch), so the next fetch gets a new one."""
        with slot.lock:
            slot.land(flight)
        slot.refresher.stop(timeout=0)
        name = slot.settings.provider_name
        return OAuth2AuthenticationError(
            f"provider '{name}': no token after waiting {_flight_wait_seconds(slot.settings):.0f} s "
            "for the token request in progress, longer than it can take; the next call requests a new one",
            provider=name,
        )

    def _usable_or_flight(self, slot: _Slot, *, wait_ok: bool) -> _Cached | Future[_Cached]:
        """A token to use now, or the future of the one fetch every waiting caller shares.

        With ``wait_ok`` False (a synchronous caller) a new fetch runs in the calling thread, which
        waits for it anyway, and starts the refresher for the refresh windows to come; with True
        (asyncio) the refresher runs it and the caller awaits the future.
        """
        now = _monotonic()
        cached = slot.cached
        if (
            cached is not None
            and now < cached.usable_until
            and (slot.flight is not None or now < slot.next_background_at)
        ):
            # Inside the refresh window with the refresh already running (or backing off): no
            # lock, so the callers of a busy process never queue on each other while it runs.
            slot.emit("stale_served")
            return cached
        run_inline = False
        with slot.lock:
            now = time.monotonic()
            cached = slot.cached
            if cached is not None and now < cached.usable_until:
                if now >= cached.refresh_at:
                    slot.emit("stale_served")
                    self._start_background_refresh(slot, now)
                return cached
            if slot.failure is not None:
                error, until = slot.failure
                if now < until:
                    slot.emit("negative_hit")
                    raise error.with_traceback(None)
                slot.failure = None
            slot.emit("waited")
            flight = slot.flight
            if flight is None:
                flight = slot.flight = _new_flight()
                if wait_ok:
                    self._hand_over(slot, flight, background=False)
                else:
                    run_inline = True
        if run_inline:
            with suppress(RuntimeError):  # no thread now: the refresh window tries again
                slot.refresher.start()
            self._run_flight(slot, flight, background=False)
        return flight

    def _start_background_refresh(self, slot: _Slot, now: float) -> None:
        """Called with the slot lock held: one refresh at a time, after any backoff."""
        if slot.flight is not None or now < slot.next_background_at:
            return
        slot.emit("refresh_started")
        slot.flight = _new_flight()
        self._hand_over(slot, slot.flight, background=True)

    def _hand_over(self, slot: _Slot, flight: Future[_Cached], *, background: bool) -> None:
        """Have the slot's refresher run ``flight`` (called under the slot lock): once it runs, this
        only sets an event.

        A refresher that cannot start (a pids limit) fails this flight only: nothing is remembered,
        the next call (or, for a refresh, the next try after the backoff) starts another.
        """
        name = slot.settings.provider_name
        try:
            slot.refresher.submit(partial(self._run_flight, slot, flight, background))
        except RuntimeError as exc:
            slot.land(flight)
            error = OAuth2AuthenticationError(
                f"provider '{name}': cannot start a thread to request the token ({exc}); try again",
                exc,
                name,
            )
            if background:
                self._schedule_background_retry(slot, error)
            flight.set_exception(error)

    def _run_flight(self, slot: _Slot, flight: Future[_Cached], background: bool) -> None:
        try:
            cached = self._fetch(slot)
        except Exception as exc:
            with slot.lock:
                slot.land(flight)
                slot.emit("fetch_failed")
                if background:
                    slot.emit("refresh_failed")
                    self._schedule_background_retry(slot, exc)
                else:
                    slot.failure = (exc, time.monotonic() + NEGATIVE_CACHE_SECONDS)
                overdue = _note_failure(slot, exc)
            if overdue is not None:
                _log_failing_too_long(slot, overdue)
            flight.set_exception(exc)
            return
        except BaseException as exc:
            # Ctrl-C or SystemExit belongs to this thread: nothing is remembered, waiters retry.
            with slot.lock:
                slot.land(flight)
            flight.set_exception(_Interrupted(slot.settings.provider_name, exc))
            raise
        with slot.lock:
            slot.land(flight)
            slot.publish(cached)
            slot.failure = None
            slot.background_failures = 0
            slot.next_background_at = 0.0
            slot.failing_since = None
            slot.last_failure = None
        flight.set_result(cached)

    def _schedule_background_retry(self, slot: _Slot, exc: BaseException) -> None:
        slot.background_failures += 1
        backoff = min(REFRESH_BACKOFF_INITIAL * 2 ** (slot.background_failures - 1), REFRESH_BACKOFF_MAX)
        now = time.monotonic()
        if slot.cached is not None:
            backoff = min(backoff, max(0.0, (slot.cached.usable_until - now) / 2))
        slot.next_background_at = now + backoff
        reason = exc.message if isinstance(exc, OAuth2Error) else type(exc).__name__
        logger.warning(
            "provider %s: background token refresh failed, still serving the current token; "
            "next try in %.1f s: %s",
            slot.settings.provider_name,
            backoff,
            reason,
            extra={"provider": slot.settings.provider_name, "event": "refresh_failed"},
        )

    def _fetch(self, slot: _Slot) -> _Cached:
        """Fetch through the store: whoever holds the store's lock fetches, the rest reuse its token."""
        settings = slot.settings
        buffer = settings.expiry_buffer_seconds
        with self._store.lock(slot.key, settings):
            shared = self._store.get(slot.key, settings)
            if shared is not None and (
                slot.cached is None or shared.access_token != slot.cached.token.access_token
            ):
                lifecycle = Lifecycle.of(shared, buffer)
                if time.monotonic() < lifecycle.refresh_at:
                    return _Cached(shared, lifecycle)
            slot.emit("fetch_started")
            token = slot.client.fetch()
            self._store.set(slot.key, token, settings)
        if token.lifetime < MIN_TOKEN_LIFETIME_SECONDS and not slot.short_lifetime_logged:
            slot.short_lifetime_logged = True
            logger.warning(
                "provider %s: the token endpoint granted a lifetime of %.3g s, shorter than %g s; "
                "using each token for %g s to bound the token requests",
                settings.provider_name,
                token.lifetime,
                MIN_TOKEN_LIFETIME_SECONDS,
                MIN_TOKEN_LIFETIME_SECONDS,
                extra={"provider": settings.provider_name, "event": "short_token_lifetime"},
            )
        return _Cached(token, Lifecycle.of(token, buffer))


class _Interrupted(OAuth2AuthenticationError):
    """The fetch a caller waited for ended by a ``BaseException`` in its own thread."""

    def __init__(self, provider: str, cause: BaseException) -> None:
        super().__init__(
            f"provider '{provider}': the token request was interrupted ({type(cause).__name__}) "
            "in the thread making it; try again",
            provider=provider,
        )


def _seconds_left(cached: _Cached | None, now: float) -> float | None:
    """Seconds until ``cached`` may no longer be handed out, ``None`` when none is usable."""
    if cached is None or now >= cached.usable_until:
        return None
    return cached.usable_until - now


def _note_failure(slot: _Slot, exc: Exception) -> float | None:
    """Record a failed fetch for ``health()`` (under the slot lock).

    Returns for how long fetches have been failing when that is more than half of the last
    token's usable life and no ERROR was logged for the past half life, else ``None``.
    """
    now, wall = time.monotonic(), time.time()
    if slot.failing_since is None:
        slot.failing_since = (now, wall)
    reason = exc.message if isinstance(exc, OAuth2Error) else type(exc).__name__
    slot.last_failure = (wall, reason)
    half_life = slot.usable_life / 2
    failing_for = now - slot.failing_since[0]
    if half_life <= 0 or failing_for <= half_life or now - slot.failing_logged_at < half_life:
        return None
    slot.failing_logged_at = now
    return failing_for


def _log_failing_too_long(slot: _Slot, failing_for: float) -> None:
    name = slot.settings.provider_name
    logger.error(
        "provider %s: token fetches have been failing for %.0f s, more than half of a token's usable "
        "life (%.0f s): calls fail once the current token expires; last error: %s",
        name,
        failing_for,
        slot.usable_life,
        slot.last_failure[1] if slot.last_failure else "unknown",
        extra={"provider": name, "event": "refresh_failing_too_long"},
    )


def _log_listener_error(listener: Listener, exc: Exception) -> None:
    logger.warning(
        "a token cache event listener (%s) raised %s; ignored",
        getattr(listener, "__qualname__", type(listener).__name__),
        type(exc).__name__,
        extra={"provider": None, "event": "listener_failed"},
    )


def _new_flight() -> Future[_Cached]:
    """A shared fetch, already running: a waiter's cancellation can then never cancel it for the others."""
    flight: Future[_Cached] = Future()
    flight.set_running_or_notify_cancel()
    return flight


def _flight_wait_seconds(settings: ProviderSettings) -> float:
    """How long a caller waits for a flight: the store's lock wait and the fetch, each at their longest."""
    return 2 * max_fetch_seconds(settings) + STORE_SLACK_SECONDS


def _as_seen_by(exc: OAuth2Error, provider: str) -> OAuth2Error:
    """``exc`` naming ``provider``: providers sharing one token identity share its failures too."""
    message = f"provider '{provider}': " + exc.message.removeprefix(f"provider '{exc.provider}': ")
    if isinstance(exc, OAuth2AuthenticationError):
        return OAuth2AuthenticationError(
            message,
            exc.original_error,
            provider,
            http_status=exc.http_status,
            error=exc.error,
            error_description=exc.error_description,
        )
    return type(exc)(message, exc.original_error, provider)
