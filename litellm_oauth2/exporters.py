"""The token caches' counters as Prometheus and OpenTelemetry metrics.

Each exporter imports its package (``prometheus_client``, ``opentelemetry-api``) only when
called, so a configuration that switches neither never loads them. Both read
``TokenCache.stats()`` when they are collected; only the latency histogram of OpenTelemetry,
which has no observable histogram, records each token request as it happens (from the moment
it is switched on).

Prometheus: one collector per registry and process, whatever the number of caches; samples of
caches serving the same provider name are summed. Under ``PROMETHEUS_MULTIPROC_DIR`` (the LiteLLM
proxy with several workers) the proxy's ``/metrics`` serves a fresh registry holding only
``prometheus_client``'s ``MultiProcessCollector``, which aggregates what its own metric classes
wrote to that directory: a custom collector like this one is not served there. LiteLLM's service
logging (``_service_logging``) and OpenTelemetry are the routes for that setup.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .config import MetricsSettings
from .errors import OAuth2ConfigurationError
from .metrics import OUTCOMES, CacheEvent, ProviderStats

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from prometheus_client.registry import CollectorRegistry

    from .cache import TokenCache

__all__ = ["export_metrics", "export_to_opentelemetry", "export_to_prometheus"]

PROMETHEUS_PREFIX = "litellm_oauth2_"
OTEL_METER_NAME = "litellm_oauth2"

# Counter name suffix (Prometheus: prefix + name + "_total"; OTel: "litellm_oauth2." + dotted name),
# the ProviderStats field counted, and what it counts.
_COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("token_fetches", "token.fetches", "fetches", "Token fetches (one per token needed, retries included)"),
    ("token_fetch_failures", "token.fetch_failures", "fetch_failures", "Token fetches that brought no token"),
    ("background_refreshes", "refreshes", "background_refreshes", "Background refreshes started"),
    ("background_refresh_failures", "refresh.failures", "background_refresh_failures", "Background refreshes that failed"),
    ("waits", "waits", "waits", "Calls that waited for a token fetch"),
    ("stale_tokens_served", "stale_served", "stale_served", "Tokens served inside the refresh window while a refresh ran or backed off"),
    ("negative_cache_hits", "negative_cache.hits", "negative_hits", "Calls answered with a remembered fetch failure"),
    ("refetches_after_401", "refetches_after_401", "refetches_after_401", "Tokens dropped after the gateway refused them"),
)  # fmt: skip

_lock = threading.Lock()
# Per registry / MeterProvider: the caches its one collector or instrument set reads.
_prometheus_caches: weakref.WeakKeyDictionary[Any, weakref.WeakSet[TokenCache]] = weakref.WeakKeyDictionary()
_otel_caches: weakref.WeakKeyDictionary[Any, weakref.WeakSet[TokenCache]] = weakref.WeakKeyDictionary()


def export_metrics(cache: TokenCache, settings: MetricsSettings) -> None:
    """Switch on the exporters ``settings`` names, on the default registry and global MeterProvider.

    Raises:
        OAuth2ConfigurationError: an exporter is switched on and its package is not installed.
    """
    if settings.prometheus:
        export_to_prometheus(cache)
    if settings.opentelemetry:
        export_to_opentelemetry(cache)


def export_to_prometheus(cache: TokenCache, registry: CollectorRegistry | None = None) -> None:
    """Serve ``cache``'s counters from ``registry`` (default: ``prometheus_client.REGISTRY``).

    Raises:
        OAuth2ConfigurationError: ``prometheus_client`` is not installed.
    """
    try:
        import prometheus_client
    except ImportError as exc:
        raise _missing("prometheus", "prometheus", exc) from None
    registry = registry if registry is not None else prometheus_client.REGISTRY
    with _lock:
        caches = _prometheus_caches.get(registry)
        if caches is None:
            caches = _prometheus_caches[registry] = weakref.WeakSet()
            registry.register(_PrometheusCollector(caches))
        caches.add(cache)


def export_to_opentelemetry(cache: TokenCache, meter_provider: MeterProvider | None = None) -> None:
    """Observe ``cache``'s counters through ``meter_provider`` (default: the global one).

    Raises:
        OAuth2ConfigurationError: ``opentelemetry-api`` is not installed.
    """
    try:
        from opentelemetry import metrics
    except ImportError as exc:
        raise _missing("opentelemetry", "otel", exc) from None
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    with _lock:
        caches = _otel_caches.get(provider)
        if caches is None:
            caches = _otel_caches[provider] = weakref.WeakSet()
            _register_instruments(provider, caches)
        if cache in caches:
            return  # already exported: a second histogram listener would count each request twice
        caches.add(cache)
    histogram = provider.get_meter(OTEL_METER_NAME, _version()).create_histogram(
        "litellm_oauth2.token.request.duration", unit="s", description="Token request duration"
    )

    def record(event: CacheEvent) -> None:
        if event.kind == "token_request" and event.seconds is not None:
            histogram.record(event.seconds, {"provider": event.provider, "outcome": str(event.outcome)})

    cache.subscribe(record)


def _missing(package: str, extra: str, exc: ImportError) -> OAuth2ConfigurationError:
    return OAuth2ConfigurationError(
        f"metrics: '{package}' is switched on but its package is not installed: "
        f"pip install 'litellm-oauth2[{extra}]'",
        original_error=exc,
        field=f"metrics.{package}",
    )


def _version() -> str:
    try:
        return version("litellm-oauth2")
    except PackageNotFoundError:
        return "0"


def _by_provider(caches: Iterable[TokenCache]) -> dict[str, list[ProviderStats]]:
    """Every cache's snapshot, grouped by provider name (two handlers may serve the same one)."""
    grouped: dict[str, list[ProviderStats]] = {}
    for cache in list(caches):
        for name, stats in cache.stats().items():
            grouped.setdefault(name, []).append(stats)
    return grouped


def _expiry(stats: list[ProviderStats]) -> float | None:
    left = [s.seconds_until_expiry for s in stats if s.seconds_until_expiry is not None]
    return max(left) if left else None


class _PrometheusCollector:
    """A ``prometheus_client`` custom collector reading the caches' snapshots at each scrape."""

    def __init__(self, caches: weakref.WeakSet[TokenCache]) -> None:
        self._caches = caches

    def describe(self) -> list[Any]:
        return []  # no help text at registration: collect() then runs at each scrape only

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        grouped = _by_provider(self._caches)
        requests = CounterMetricFamily(
            f"{PROMETHEUS_PREFIX}token_requests",
            "HTTP requests to the token endpoint (each retry is one), by outcome",
            labels=["provider", "outcome"],
        )
        duration = HistogramMetricFamily(
            f"{PROMETHEUS_PREFIX}token_request_duration_seconds",
            "Token request duration",
            labels=["provider"],
        )
        expiry = GaugeMetricFamily(
            f"{PROMETHEUS_PREFIX}token_seconds_until_expiry",
            "Seconds until the cached token may no longer be used; absent when none is held",
            labels=["provider"],
        )
        counters = [
            (CounterMetricFamily(f"{PROMETHEUS_PREFIX}{name}", text, labels=["provider"]), field)
            for name, _, field, text in _COUNTERS
        ]
        for provider, stats in sorted(grouped.items()):
            for outcome in OUTCOMES:
                requests.add_metric([provider, outcome], sum(s.token_requests[outcome] for s in stats))
            duration.add_metric([provider], *_cumulative_buckets(stats))
            for family, field in counters:
                family.add_metric([provider], sum(getattr(s, field) for s in stats))
            left = _expiry(stats)
            if left is not None:
                expiry.add_metric([provider], left)
        yield requests
        yield duration
        yield from (family for family, _ in counters)
        yield expiry


def _cumulative_buckets(stats: list[ProviderStats]) -> tuple[list[tuple[str, float]], float]:
    """Prometheus buckets ``le`` -> cumulative count, ending with ``+Inf``, and the sum of durations."""
    first = stats[0].token_request_seconds
    counts = [sum(s.token_request_seconds.counts[i] for s in stats) for i in range(len(first.counts))]
    bounds = [*(repr(float(b)) for b in first.buckets), "+Inf"]
    total, buckets = 0, []
    for bound, count in zip(bounds, counts, strict=True):
        total += count
        buckets.append((bound, float(total)))
    return buckets, sum(s.token_request_seconds.sum for s in stats)


def _register_instruments(provider: MeterProvider, caches: weakref.WeakSet[TokenCache]) -> None:
    """Observable counters and the expiry gauge on ``provider``, read from the caches at each collection."""
    from opentelemetry.metrics import Observation

    meter = provider.get_meter(OTEL_METER_NAME, _version())

    def requests(options: CallbackOptions) -> Iterable[Observation]:
        for name, stats in _by_provider(caches).items():
            for outcome in OUTCOMES:
                value = sum(s.token_requests[outcome] for s in stats)
                yield Observation(value, {"provider": name, "outcome": outcome})

    def counter(field: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for name, stats in _by_provider(caches).items():
                yield Observation(sum(getattr(s, field) for s in stats), {"provider": name})

        return observe

    def expiry(options: CallbackOptions) -> Iterable[Observation]:
        for name, stats in _by_provider(caches).items():
            left = _expiry(stats)
            if left is not None:
                yield Observation(left, {"provider": name})

    meter.create_observable_counter(
        "litellm_oauth2.token.requests",
        callbacks=[requests],
        unit="{request}",
        description="HTTP requests to the token endpoint (each retry is one), by outcome",
    )
    for _, name, field, text in _COUNTERS:
        meter.create_observable_counter(
            f"litellm_oauth2.{name}", callbacks=[counter(field)], description=text
        )
    meter.create_observable_gauge(
        "litellm_oauth2.token.time_to_expiry",
        callbacks=[expiry],
        unit="s",
        description="Seconds until the cached token may no longer be used",
    )
