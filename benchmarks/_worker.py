"""Bodies of benchmark child processes (6's workers, 4's renewer); import nothing but the token cache.

Kept apart so that a 'spawn'ed worker starts quickly: it never imports LiteLLM, peers or servers.
"""

from __future__ import annotations

import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from litellm_oauth2.cache import InMemoryTokenStore, TokenCache
from litellm_oauth2.config import OAuth2Config


def token_worker(
    config: OAuth2Config,
    provider: str,
    start: Any,
    duration: float,
    think: float,
    ready: Queue[Any],
    results: Queue[Any],
) -> None:
    """Warm up (one cold fetch), say so, wait for ``start.value``, then call ``get_token`` for ``duration``."""
    calls = failures = 0
    slowest = 0.0
    try:
        cache = TokenCache(config)
        cache.get_token(provider)
        ready.put(True)
        while start.value == 0.0:
            time.sleep(0.005)
        end_at = start.value + duration
        while time.monotonic() < start.value:
            time.sleep(0.001)
        while time.monotonic() < end_at:
            t0 = time.perf_counter()
            try:
                cache.get_token(provider)
            except Exception:
                failures += 1
            slowest = max(slowest, time.perf_counter() - t0)
            calls += 1
            time.sleep(think)
        cache.close()
        results.put({"calls": calls, "failures": failures, "slowest_s": slowest, "error": None})
    except Exception as exc:  # reported to the parent, which fails the benchmark with it
        ready.put(False)
        results.put({"calls": calls, "failures": failures, "slowest_s": slowest, "error": type(exc).__name__})


def renewer(config: OAuth2Config, provider: str, ready: Event, active: Event, stop: Event) -> None:
    """Benchmark 4's baseline: keeps a token renewed, asking every 5 ms while ``active``."""
    cache = TokenCache(config, store=InMemoryTokenStore())
    cache.get_authorization(provider)
    ready.set()
    while not stop.is_set():
        if active.wait(0.1):
            cache.get_authorization(provider)
            time.sleep(0.005)
    cache.close()
