"""Shared fixtures: real loopback servers, and LiteLLM kept offline."""

from __future__ import annotations

import os

import pytest

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
