"""What the token cache reports about itself: typed events, per-provider counters, health.

``TokenCache`` emits a ``CacheEvent`` at each point of its slow path where an outcome is known
(a token request answered, a background refresh started or failed, a caller that waited, a
stale token served, a negative-cache hit, a 401-driven refetch). A ``MetricsRecorder`` counts
them per provider and forwards them to the listeners subscribed with
``TokenCache.subscribe``; the warm path (a cached, fresh token) emits nothing and costs nothing.

Counters belong to a token identity (providers with equal settings share one token and one
fetch): they are counted under the first provider configured for it, and ``ProviderStats.providers``
lists every provider sharing them, so an exporter summing over providers counts each request once.

Exporters (``exporters_otel``, ``exporters_prometheus``) and LiteLLM's service logging
(``_service_logging``) read these snapshots or subscribe to these events; none is imported here.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ._fork import reset_in_forked_child

__all__ = [
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "CacheEvent",
    "EventKind",
    "LatencyHistogram",
    "Listener",
    "MetricsRecorder",
    "Outcome",
    "ProviderHealth",
    "ProviderStats",
]

Outcome = Literal["ok", "invalid_client", "oauth2_error", "transient", "timeout"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "invalid_client", "oauth2_error", "transient", "timeout")

EventKind = Literal[
    "fetch_started",
    "fetch_failed",
    "token_request",
    "refresh_started",
    "refresh_failed",
    "waited",
    "stale_served",
    "negative_hit",
    "invalidated_after_401",
]

# Upper bounds in seconds, Prometheus' defaults stretched to the longest retried token request.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One slow-path outcome. ``outcome`` and ``seconds`` are set for ``token_request`` only.

    ``provider`` is the first provider configured for the token identity; no field ever holds a
    credential or a token.
    """

    kind: EventKind
    provider: str
    outcome: Outcome | None = None
    seconds: float | None = None


Listener = Callable[[CacheEvent], None]


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Token request durations: ``counts[i]`` requests took at most ``buckets[i]`` seconds and more
    than the bound before it; ``counts[-1]`` took longer than the last bound (not cumulative)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    sum: float = 0.0
    count: int = 0


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """Counters of one token identity since the cache was built; a snapshot, never updated.

    ``fetches`` counts token fetches (one ``TokenClient.fetch``, with its retries) and
    ``fetch_failures`` those that brought no token; ``token_requests`` counts the HTTP requests
    to the token endpoint they made (each retry is one) by outcome:
    ``ok``, ``invalid_client``, ``oauth2_error`` (any other refusal or invalid response),
    ``transient`` (unreachable, 408/429/5xx, ``temporarily_unavailable``) and ``timeout``.
    ``seconds_until_expiry`` is read when the snapshot is taken: seconds until the cached token
    may no longer be handed out (its hard limit), ``None`` when none is held.
    """

    provider: str
    providers: tuple[str, ...]
    token_requests: Mapping[Outcome, int]
    token_request_seconds: LatencyHistogram
    fetches: int = 0
    fetch_failures: int = 0
    background_refreshes: int = 0
    background_refresh_failures: int = 0
    waits: int = 0
    stale_served: int = 0
    negative_hits: int = 0
    refetches_after_401: int = 0
    seconds_until_expiry: float | None = None


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """Whether a provider can serve calls now, and since when its refreshes fail.

    ``failing_since`` and ``last_refresh_failure_at`` are wall-clock times (``time.time()``) of
    the first and latest failed token fetch since the last success, ``None`` while fetches succeed.
    ``last_error`` is that failure's message (it names provider and endpoint host, never a secret).
    """

    provider: str
    token_held: bool
    seconds_until_expiry: float | None
    failing_since: float | None = None
    last_refresh_failure_at: float | None = None
    last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """A usable token is held and nothing is failing."""
        return self.token_held and self.failing_since is None


@dataclass
class _Counts:
    """Mutable counters of one provider, changed only under ``MetricsRecorder``'s lock."""

    requests: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds_sum: float = 0.0
    by_kind: dict[EventKind, int] = field(default_factory=dict)


class MetricsRecorder:
    """Counts events per provider and forwards them to subscribers; every method is thread-safe.

    A subscriber that raises is reported to ``on_listener_error`` and never breaks the token
    request that emitted the event.
    """

    def __init__(self, on_listener_error: Callable[[Listener, Exception], None]) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, _Counts] = {}
        self._listeners: tuple[Listener, ...] = ()
        self._on_listener_error = on_listener_error
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def emit(self, event: CacheEvent) -> None:
        with self._lock:
            counts = self._counts.setdefault(event.provider, _Counts())
            counts.by_kind[event.kind] = counts.by_kind.get(event.kind, 0) + 1
            if event.kind == "token_request" and event.outcome is not None:
                counts.requests[event.outcome] += 1
                seconds = event.seconds or 0.0
                counts.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
                counts.seconds_sum += seconds
            listeners = self._listeners
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:
                self._on_listener_error(listener, exc)

    def snapshot(
        self, provider: str, providers: tuple[str, ...], seconds_until_expiry: float | None
    ) -> ProviderStats:
        with self._lock:
            counts = self._counts.get(provider) or _Counts()
            kinds = dict(counts.by_kind)
            requests = MappingProxyType(dict(counts.requests))
            histogram = LatencyHistogram(
                counts=tuple(counts.bucket_counts),
                sum=counts.seconds_sum,
                count=sum(counts.bucket_counts),
            )
        return ProviderStats(
            provider=provider,
            providers=providers,
            token_requests=requests,
            token_request_seconds=histogram,
            fetches=kinds.get("fetch_started", 0),
            fetch_failures=kinds.get("fetch_failed", 0),
            background_refreshes=kinds.get("refresh_started", 0),
            background_refresh_failures=kinds.get("refresh_failed", 0),
            waits=kinds.get("waited", 0),
            stale_served=kinds.get("stale_served", 0),
            negative_hits=kinds.get("negative_hit", 0),
            refetches_after_401=kinds.get("invalidated_after_401", 0),
            seconds_until_expiry=seconds_until_expiry,
        )
