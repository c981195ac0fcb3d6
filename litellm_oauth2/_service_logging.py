"""Token requests reported through LiteLLM's service logging, beside its Redis and database calls.

LiteLLM (1.110.2) reports calls to the services it depends on through
``litellm._service_logger.ServiceLogging``: its ``async_service_success_hook`` and
``async_service_failure_hook`` build a ``ServiceLoggerPayload`` and hand it to each entry of
``litellm.service_callback``: ``"prometheus_system"`` (``PrometheusServicesLogger``: the
``litellm_auth_latency`` histogram, ``litellm_auth_total_requests`` and
``litellm_auth_failed_requests{error_class, function_name}`` counters), ``"datadog"`` and the
OpenTelemetry loggers (one span per call, its ``call_type`` and ``service`` as attributes).
With ``litellm.service_callback`` empty nothing is reported.

Each token request (each HTTP request to the token endpoint, a retry is one) is reported as
service ``ServiceTypes.AUTH``, LiteLLM's only service type for authentication that is not
another product's (``anthropic_wif`` is Anthropic's workload identity federation), with
``call_type`` ``oauth2_token_request/<provider>``; a failure carries an
``OAuth2AuthenticationError`` naming the outcome (never the endpoint's answer).

The hooks are coroutines: from a thread with a running event loop they are scheduled on it,
from any other (the cache's fetch threads) run to completion by ``asyncio.run``. What they
raise is logged at DEBUG and dropped: monitoring never fails a token request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from litellm._service_logger import ServiceLogging
from litellm.types.services import ServiceTypes

from .errors import OAuth2AuthenticationError
from .metrics import CacheEvent

if TYPE_CHECKING:
    from .cache import TokenCache

__all__ = ["CALL_TYPE_PREFIX", "attach_service_logging"]

logger = logging.getLogger("litellm_oauth2")

CALL_TYPE_PREFIX = "oauth2_token_request/"

_scheduled: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to its tasks


def attach_service_logging(cache: TokenCache) -> None:
    """Report every token request of ``cache`` to the callbacks in ``litellm.service_callback``."""
    service_logging = ServiceLogging()

    def report(event: CacheEvent) -> None:
        if event.kind != "token_request" or event.outcome is None:
            return
        call_type = CALL_TYPE_PREFIX + event.provider
        duration = event.seconds or 0.0
        hook: Coroutine[Any, Any, None]
        if event.outcome == "ok":
            hook = service_logging.async_service_success_hook(
                service=ServiceTypes.AUTH, call_type=call_type, duration=duration
            )
        else:
            error = OAuth2AuthenticationError(
                f"provider '{event.provider}': token request failed ({event.outcome})",
                provider=event.provider,
            )
            hook = service_logging.async_service_failure_hook(
                service=ServiceTypes.AUTH, duration=duration, error=error, call_type=call_type
            )
        _run(hook, event.provider)

    cache.subscribe(report)


def _run(hook: Coroutine[Any, Any, None], provider: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        task = loop.create_task(_guarded(hook, provider))
        _scheduled.add(task)
        task.add_done_callback(_scheduled.discard)
    else:
        asyncio.run(_guarded(hook, provider))


async def _guarded(hook: Coroutine[Any, Any, None], provider: str) -> None:
    try:
        await hook
    except Exception as exc:
        logger.debug(
            "provider %s: LiteLLM service logging raised %s; dropped",
            provider,
            type(exc).__name__,
            extra={"provider": provider, "event": "service_logging_failed"},
        )
