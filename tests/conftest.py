"""Shared fixtures: real loopback servers, and LiteLLM kept offline."""

from __future__ import annotations

import os

import pytest

from litellm_oauth2 import cache

# LiteLLM downloads its model cost map at import unless told not to; there is no network in CI.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.pop("LITELLM_OAUTH2_CONFIG", None)

pytest_plugins = ["litellm_oauth2.testing.pytest_plugin"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-full",
        action="store_true",
        default=False,
        help="run tests/test_chaos.py at full size (2,000 calls) instead of the reduced CI size",
    )


@pytest.fixture(autouse=True)
def _fresh_process_token_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with an empty process-wide token store, as a new process would.

    The store is keyed by token URL and client: right for real identity providers, wrong across
    tests, where a new ``TokenServer`` may get the port of a closed one and would be handed that
    server's token (tests/test_isolation.py). A unique issuer would not help, since the issuer is
    not part of the key; a fresh store changes nothing in the product.
    """
    monkeypatch.setattr(cache, "PROCESS_STORE", cache.InMemoryTokenStore())
