"""The bearer token on the wire: one ``httpx.Auth`` on the HTTP clients the plugin owns.

Every request of an OAuth2 provider leaves through it, whichever LiteLLM handler built the
request (the openai SDK's clients or LiteLLM's own ``HTTPHandler``), so the token is written as
the request leaves and never enters LiteLLM's kwargs, logging payloads or debug output. The
credential headers LiteLLM writes from the placeholder key (``api-key``, ``x-api-key``) are
removed, and the provider's configured ``headers`` are written last, so they win.

A 401 from the gateway drops that token and sends the request once more with a new one, before
httpx hands a response (or a stream's first byte) to anyone: the policy is one generator,
``_bearer_flow``, driven by ``sync_auth_flow`` and ``async_auth_flow`` (httpx's own shape). When
the new token cannot be had, the 401 goes back to the caller and the reason is logged: an
exception raised inside an auth flow would reach the caller as LiteLLM's ``InternalServerError``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from .errors import OAuth2Error

if TYPE_CHECKING:
    from .cache import TokenCache

__all__ = ["OAuth2BearerAuth"]

logger = logging.getLogger("litellm_oauth2")

# Headers LiteLLM or a caller may send that would compete with the bearer token.
_CREDENTIAL_HEADERS = ("api-key", "x-api-key")


@dataclass(frozen=True, slots=True)
class _NeedAuthorization:
    """A step of the flow: the driver answers with the ``Authorization`` value to send, or None when
    it could not get one after a 401. ``rejected``: the value the gateway refused, to drop first."""

    rejected: str | None


def _bearer_flow(
    request: httpx.Request, headers: dict[str, str]
) -> Generator[_NeedAuthorization | httpx.Request, str | httpx.Response | None, None]:
    """Send ``request`` with the current token; on a 401 once more with a new one."""
    authorization = yield _NeedAuthorization(None)
    assert isinstance(authorization, str)
    _authorize(request, authorization, headers)
    response = yield request
    assert isinstance(response, httpx.Response)
    if response.status_code != 401:
        return
    renewed = yield _NeedAuthorization(authorization)
    if not isinstance(renewed, str):
        return  # no new token: the caller gets the gateway's 401
    _authorize(request, renewed, headers)
    yield request


def _advance(
    flow: Generator[_NeedAuthorization | httpx.Request, str | httpx.Response | None, None],
    answer: str | httpx.Response | None,
) -> _NeedAuthorization | httpx.Request | None:
    """The flow's next step after ``answer``, or None when it is done."""
    try:
        return flow.send(answer)
    except StopIteration:
        return None


def _authorize(request: httpx.Request, authorization: str, headers: dict[str, str]) -> None:
    for name in _CREDENTIAL_HEADERS:
        if name in request.headers:
            del request.headers[name]
    request.headers["Authorization"] = authorization
    for name, value in headers.items():
        request.headers[name] = value


class OAuth2BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` from ``cache`` for ``provider``, with one retry on 401.

    The first value comes from the cache's hot path: the call's door (the plugin's wrapper of
    the LiteLLM function) has already fetched the token, or raised before any request.
    """

    # The body is read once so that the request can be sent again after a 401, as the openai
    # SDK does for its own retries (uploads are held in memory for the call).
    requires_request_body = True

    def __init__(self, cache: TokenCache, provider: str, headers: dict[str, str]) -> None:
        self._cache = cache
        self._provider = provider
        self._headers = headers
        # The last values sent, so that a gateway's error text can be cleaned of them.
        self.recently_sent: collections.deque[str] = collections.deque(maxlen=4)
        # Why the last renewal after a 401 failed, and when (monotonic): the call's door raises
        # it in place of the gateway's 401, so the Router sees a credential problem.
        self.renew_failure: tuple[float, OAuth2Error] | None = None

    def __repr__(self) -> str:
        return f"OAuth2BearerAuth({self._provider!r})"

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = _bearer_flow(request, self._headers)
        step = _advance(flow, None)
        while step is not None:
            if isinstance(step, httpx.Request):
                step = _advance(flow, (yield step))
            elif step.rejected is None:
                step = _advance(flow, self._sent(self._cache.get_authorization(self._provider)))
            else:
                step = _advance(flow, self._sent(self._renew(step.rejected)))

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = _bearer_flow(request, self._headers)
        step = _advance(flow, None)
        while step is not None:
            if isinstance(step, httpx.Request):
                step = _advance(flow, (yield step))
            elif step.rejected is None:
                step = _advance(flow, self._sent(await self._cache.aget_authorization(self._provider)))
            else:
                # A shared store may do network I/O on invalidation: keep it off the event loop.
                step = _advance(flow, self._sent(await asyncio.to_thread(self._renew, step.rejected)))

    def _sent(self, authorization: str | None) -> str | None:
        if authorization is not None:
            self.recently_sent.append(authorization)
        return authorization

    def _renew(self, rejected: str) -> str | None:
        """A new ``Authorization`` value after the gateway refused ``rejected``, or None."""
        self._cache.invalidate(self._provider, rejected.removeprefix("Bearer "))
        logger.info(
            "provider %s: gateway answered 401, retrying once with a new token",
            self._provider,
            extra={"provider": self._provider, "event": "gateway_401_retry"},
        )
        try:
            return self._cache.get_authorization(self._provider)
        except OAuth2Error as exc:
            self.renew_failure = (time.monotonic(), exc)
            logger.warning(
                "provider %s: no new token after the gateway's 401, returning the 401: %s",
                self._provider,
                exc,
                extra={"provider": self._provider, "event": "renewal_after_401_failed"},
            )
            return None
