"""Token requests reach LiteLLM's service logging: its Prometheus service metrics count them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict
from prometheus_client import REGISTRY

from litellm_oauth2 import OAuth2AuthenticationError, TokenCache
from litellm_oauth2._service_logging import CALL_TYPE_PREFIX, attach_service_logging
from litellm_oauth2.cache import InMemoryTokenStore
from litellm_oauth2.testing import TokenServer

PROVIDER = "idp"
SERVICE = {"auth": "auth"}
FAILED = {**SERVICE, "error_class": "OAuth2AuthenticationError", "function_name": CALL_TYPE_PREFIX + PROVIDER}


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("test-client", SECRET)
        yield srv


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_token_request_is_counted_by_litellms_prometheus_service_logger(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(litellm, "service_callback", ["prometheus_system"])
    settings = provider_dict(
        server.token_url, retry={"attempts": 1, "initial_delay": 0.01, "max_delay": 0.01}
    )
    cache = TokenCache(config_of({PROVIDER: settings}), store=InMemoryTokenStore())
    attach_service_logging(cache)
    before = (
        sample("litellm_auth_total_requests_total", SERVICE),
        sample("litellm_auth_failed_requests_total", FAILED),
        sample("litellm_auth_latency_count", SERVICE),
    )
    try:
        server.fail_next(1, status=503)  # one failed attempt, then the retry succeeds
        cache.get_token(PROVIDER)
        cache.invalidate(PROVIDER)
        server.fail_next(2, status=503)
        with pytest.raises(OAuth2AuthenticationError):
            asyncio.run(cache.aget_token(PROVIDER))  # fetched in a worker thread, no event loop there
    finally:
        cache.close()
    after = (
        sample("litellm_auth_total_requests_total", SERVICE),
        sample("litellm_auth_failed_requests_total", FAILED),
        sample("litellm_auth_latency_count", SERVICE),
    )
    assert server.token_requests == 4
    requests, failures, latencies = (a - b for a, b in zip(after, before, strict=True))
    assert failures == 3
    assert latencies == 1  # LiteLLM observes the latency of successful calls only
    assert requests == 4


def test_a_cache_without_service_callbacks_reports_nothing(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(litellm, "service_callback", [])
    cache = TokenCache(config_of({PROVIDER: provider_dict(server.token_url)}), store=InMemoryTokenStore())
    attach_service_logging(cache)
    before = sample("litellm_auth_total_requests_total", SERVICE)
    try:
        cache.get_token(PROVIDER)
    finally:
        cache.close()
    assert sample("litellm_auth_total_requests_total", SERVICE) == before
