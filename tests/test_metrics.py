"""Metrics, exporters and health against the real token server, with injected failures.

The counters must equal what the token server itself counted; exporters are real: an
OpenTelemetry SDK ``MeterProvider`` with an in-memory reader, a ``prometheus_client`` registry
served over HTTP on loopback and scraped, and LiteLLM's own service logging.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SECRET, config_of, provider_dict
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from litellm_oauth2 import OAuth2AuthenticationError, TokenCache
from litellm_oauth2.cache import NEGATIVE_CACHE_SECONDS, InMemoryTokenStore
from litellm_oauth2.exporters import export_to_opentelemetry, export_to_prometheus
from litellm_oauth2.metrics import OUTCOMES, CacheEvent
from litellm_oauth2.testing import TokenServer

PROVIDER = "idp"
LIFETIME = 300.0
BUFFER = 60.0
RETRY = {"attempts": 1, "initial_delay": 0.01, "max_delay": 0.01}


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=LIFETIME) as srv:
        srv.add_client("test-client", SECRET)
        yield srv


def make_cache(server: TokenServer, **overrides: Any) -> TokenCache:
    settings = provider_dict(server.token_url, **{"retry": RETRY, "timeout_seconds": 0.5, **overrides})
    return TokenCache(config_of({PROVIDER: settings}), store=InMemoryTokenStore())


def run_with_every_outcome(cache: TokenCache, server: TokenServer) -> dict[str, int]:
    """Token requests ending in each outcome; returns how many of each were made."""
    token = cache.get_token(PROVIDER)  # ok
    assert cache.invalidate(PROVIDER, token)  # a 401 from the gateway: one refetch
    cache.get_token(PROVIDER)  # ok
    cache.invalidate(PROVIDER)
    server.fail_next(2, status=503)  # transient, retried once, then given up
    with pytest.raises(OAuth2AuthenticationError):
        cache.get_token(PROVIDER)
    with pytest.raises(OAuth2AuthenticationError):
        cache.get_token(PROVIDER)  # the negative cache answers: no request
    time.sleep(NEGATIVE_CACHE_SECONDS)
    server.fail_next(1, status=401, error="invalid_client")  # not retried
    with pytest.raises(OAuth2AuthenticationError):
        cache.get_token(PROVIDER)
    time.sleep(NEGATIVE_CACHE_SECONDS)
    server.fail_next(1, status=400, error="invalid_scope")
    with pytest.raises(OAuth2AuthenticationError):
        cache.get_token(PROVIDER)
    time.sleep(NEGATIVE_CACHE_SECONDS)
    server.delay_next(1, 1.5)  # times out after 0.5 s; the retry succeeds
    cache.get_token(PROVIDER)
    return {"ok": 3, "transient": 2, "invalid_client": 1, "oauth2_error": 1, "timeout": 1}


def test_stats_count_each_outcome_as_the_token_server_saw_it(server: TokenServer) -> None:
    cache = make_cache(server)
    try:
        expected = run_with_every_outcome(cache, server)
        stats = cache.stats(PROVIDER)
    finally:
        cache.close()
    assert dict(stats.token_requests) == expected
    assert sum(stats.token_requests.values()) == server.token_requests == 8
    assert stats.token_request_seconds.count == server.token_requests
    assert stats.fetches == 6 and stats.fetch_failures == 3
    assert stats.refetches_after_401 == 1
    assert stats.negative_hits == 1
    assert stats.waits == 6  # every call that found no token waited for its fetch
    assert stats.providers == (PROVIDER,)
    assert stats.seconds_until_expiry is not None
    assert LIFETIME - BUFFER - 5 < stats.seconds_until_expiry <= LIFETIME - BUFFER
    assert list(cache.stats()) == [PROVIDER]


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def test_opentelemetry_counters_gauge_and_histogram(server: TokenServer) -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    cache = make_cache(server)
    try:
        export_to_opentelemetry(cache, meter_provider)
        export_to_opentelemetry(cache, meter_provider)  # exporting again changes nothing
        expected = run_with_every_outcome(cache, server)
        first = points(reader)
        time.sleep(0.5)
        second = points(reader)
        cache.invalidate(PROVIDER)
        without_token = points(reader)
    finally:
        cache.close()
        meter_provider.shutdown()

    requests = {p.attributes["outcome"]: p.value for p in first["litellm_oauth2.token.requests"]}
    assert requests == expected
    assert sum(requests.values()) == server.token_requests
    assert {p.attributes["provider"] for p in first["litellm_oauth2.token.requests"]} == {PROVIDER}
    assert [p.value for p in first["litellm_oauth2.refetches_after_401"]] == [1]
    assert [p.value for p in first["litellm_oauth2.negative_cache.hits"]] == [1]
    assert [p.value for p in first["litellm_oauth2.token.fetch_failures"]] == [3]
    durations = first["litellm_oauth2.token.request.duration"]
    assert sum(p.count for p in durations) == server.token_requests
    assert {p.attributes["outcome"] for p in durations} == set(OUTCOMES)
    # The gauge is read at collection: it falls with time and vanishes with the token.
    (early,) = (p.value for p in first["litellm_oauth2.token.time_to_expiry"])
    (later,) = (p.value for p in second["litellm_oauth2.token.time_to_expiry"])
    assert LIFETIME - BUFFER - 5 < later < early <= LIFETIME - BUFFER
    assert not without_token.get("litellm_oauth2.token.time_to_expiry")


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_prometheus_scrape_over_http(server: TokenServer) -> None:
    registry = CollectorRegistry()
    http_server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    first = make_cache(server)
    second = make_cache(server)  # a second handler on the same process and registry
    try:
        port = http_server.server_address[1]
        export_to_prometheus(first, registry)
        export_to_prometheus(second, registry)
        export_to_prometheus(first, registry)  # registering again changes nothing
        expected = run_with_every_outcome(first, server)
        second.get_token(PROVIDER)
        expected["ok"] += 1
        samples = scrape(port)
        first.invalidate(PROVIDER)
        second.invalidate(PROVIDER)
        after = scrape(port)
    finally:
        first.close()
        second.close()
        http_server.shutdown()
        thread.join(timeout=10)

    requests = samples["litellm_oauth2_token_requests_total"]
    assert {dict(labels)["outcome"]: value for labels, value in requests.items()} == expected
    assert sum(requests.values()) == server.token_requests
    assert samples["litellm_oauth2_token_request_duration_seconds_count"] == {
        (("provider", PROVIDER),): server.token_requests
    }
    assert samples["litellm_oauth2_refetches_after_401_total"] == {(("provider", PROVIDER),): 1}
    assert samples["litellm_oauth2_negative_cache_hits_total"] == {(("provider", PROVIDER),): 1}
    (left,) = samples["litellm_oauth2_token_seconds_until_expiry"].values()
    assert LIFETIME - BUFFER - 5 < left <= LIFETIME - BUFFER
    assert "litellm_oauth2_token_seconds_until_expiry" not in after
    labels = {name for series in samples.values() for key in series for name, _ in key}
    assert labels <= {"provider", "outcome", "le"}


def test_background_refresh_failures_and_stale_tokens_are_counted(server: TokenServer) -> None:
    server.token_lifetime = 2.0  # usable 1.5 s, refreshed from 0.75 s
    cache = make_cache(server, retry={"attempts": 0})
    events: list[CacheEvent] = []
    cache.subscribe(events.append)
    try:
        cache.get_token(PROVIDER)
        server.fail_next(1000, status=503)
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            cache.get_token(PROVIDER)
            time.sleep(0.01)
        stats = cache.stats(PROVIDER)
        health = cache.health()[PROVIDER]
    finally:
        cache.close()
    assert stats.background_refreshes >= 1
    assert stats.background_refresh_failures == stats.token_requests["transient"]
    assert stats.background_refreshes >= stats.background_refresh_failures
    assert stats.token_requests["transient"] + 1 == server.token_requests
    assert stats.stale_served >= 10
    assert [e.kind for e in events].count("stale_served") == stats.stale_served
    assert health.token_held and not health.healthy
    assert health.failing_since is not None and health.last_refresh_failure_at is not None
    assert health.failing_since <= health.last_refresh_failure_at <= time.time()
    assert health.last_error is not None and "503" in health.last_error


def test_health_of_a_provider_whose_fetches_succeed(server: TokenServer) -> None:
    cache = make_cache(server)
    try:
        assert cache.health()[PROVIDER].token_held is False
        cache.get_token(PROVIDER)
        health = cache.health()[PROVIDER]
    finally:
        cache.close()
    assert health.healthy and health.failing_since is None and health.last_error is None
    assert health.seconds_until_expiry is not None and health.seconds_until_expiry <= LIFETIME - BUFFER


def test_failing_for_half_a_token_life_logs_one_error_per_half_life(
    server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call fails for 6.5 s, fetches fail about once a second: one ERROR per 1.5 s at most."""
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    server.token_lifetime = 4.0  # usable 3 s, refreshed from 1.5 s: ERRORs 1.5 s apart
    half_life = 1.5
    cache = make_cache(server, retry={"attempts": 0})
    calls = 0
    try:
        cache.get_token(PROVIDER)
        server.fail_next(1000, status=503)
        started = time.monotonic()
        while time.monotonic() < started + 6.5:
            calls += 1
            with contextlib.suppress(OAuth2AuthenticationError):
                cache.get_token(PROVIDER)
            time.sleep(0.01)
        failures = cache.stats(PROVIDER).fetch_failures
    finally:
        cache.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) >= 2, f"{len(errors)} ERRORs although fetches failed for 5 s"
    assert all(getattr(r, "event", None) == "refresh_failing_too_long" for r in errors)
    assert all(getattr(r, "provider", None) == PROVIDER for r in errors)
    gaps = [later.created - earlier.created for earlier, later in itertools.pairwise(errors)]
    assert min(gaps) >= half_life * 0.9, f"ERRORs {gaps} s apart, more often than every {half_life} s"
    assert len(errors) < failures < calls


def test_a_listener_that_raises_never_fails_the_call(server: TokenServer) -> None:
    cache = make_cache(server)

    def broken(event: CacheEvent) -> None:
        raise RuntimeError("listener bug")

    cache.subscribe(broken)
    try:
        assert cache.get_token(PROVIDER)
        assert cache.stats(PROVIDER).token_requests["ok"] == 1
    finally:
        cache.close()


def test_exporter_packages_are_not_imported_unless_configured(server: TokenServer) -> None:
    code = f"""
import sys
from litellm_oauth2 import TokenCache
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.exporters import export_metrics
config = OAuth2Config.from_dict({{"oauth2_providers": {{"idp": {{
    "token_url": "{server.token_url}", "client_id": "test-client", "client_secret": {SECRET!r},
    "allow_insecure_http": True}}}}}})
cache = TokenCache(config)
export_metrics(cache, config.metrics)
cache.get_token("idp")
cache.stats(); cache.health()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("prometheus_client", "opentelemetry", "litellm")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("package", "module", "extra"),
    [("prometheus", "prometheus_client", "prometheus"), ("opentelemetry", "opentelemetry", "otel")],
)
def test_an_exporter_switched_on_without_its_package_names_the_extra(
    server: TokenServer, package: str, module: str, extra: str
) -> None:
    code = f"""
import sys
sys.modules[{module!r}] = None  # as if not installed
from litellm_oauth2 import OAuth2ConfigurationError, TokenCache
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.exporters import export_metrics
config = OAuth2Config.from_dict({{"metrics": {{{package!r}: True}}, "oauth2_providers": {{"idp": {{
    "token_url": "{server.token_url}", "client_id": "test-client", "client_secret": "x"}}}}}})
try:
    export_metrics(TokenCache(config), config.metrics)
except OAuth2ConfigurationError as exc:
    print(exc.field, exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"metrics.{package} ")
    assert f"litellm-oauth2[{extra}]" in result.stdout
