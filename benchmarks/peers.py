"""Every contender, built the way its documentation says, against the loopback token server.

Each builder returns a ``Contender``: how to obtain the request headers for one call,
synchronously and (where the package has an asyncio path) asynchronously, plus the same
operation as an inline statement for the warm-path timing loops (single-threaded, so there
they reuse one request object; the callables used from many threads build one per call). Every contender gets its own
OAuth2 client id, so the token server counts its token requests separately.

* ours: ``TokenCache.get_authorization`` / ``aget_authorization``: the header value, built once per token.
* httpx-auth: ``OAuth2ClientCredentials`` driven as httpx drives it (``auth_flow`` on a request).
* Authlib: ``OAuth2Session`` (requests) and ``AsyncOAuth2Client`` (httpx) with a
  ``token_endpoint`` and ``grant_type="client_credentials"``, so ``ensure_active_token``
  re-fetches expired tokens; the first token is fetched lazily (``if not session.token``).
* litellm.proxy_auth: ``ProxyAuthHandler(GenericOAuth2Credential(...))``; ``get_auth_headers``
  is what ``litellm.completion`` calls for every request (from its executor thread under
  ``acompletion``, which is how the asyncio callers here call it too).
* static key: a dict literal, no OAuth2 at all.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from litellm_oauth2.cache import InMemoryTokenStore, TokenCache
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.metrics import ProviderStats

SECRET = "bench-KNOWN-client-secret-4f1d9a7c"
STATIC_API_KEY = "sk-bench-KNOWN-static-key-8e2b5d"
PROVIDER = "bench"

OURS = "litellm-oauth2"
HTTPX_AUTH = "httpx-auth"
AUTHLIB = "Authlib"
PROXY_AUTH = "litellm.proxy_auth"
STATIC = "static key"

# The early-expiry margins the peers use unless told otherwise (from their source).
DEFAULT_MARGIN = {HTTPX_AUTH: 30.0, AUTHLIB: 60.0, PROXY_AUTH: 60.0}

Headers = Mapping[str, str]


@dataclass
class Contender:
    name: str
    client_id: str
    sync: Callable[[], Any]
    stmt: str
    namespace: dict[str, Any]
    asynchronous: Callable[[], Awaitable[Any]] | None = None
    astmt: str | None = None
    close: Callable[[], None] = lambda: None
    notes: list[str] = field(default_factory=list)
    stats: Callable[[], ProviderStats] | None = None
    """Ours only: the cache's slow-path counters (how many callers waited on the identity provider)."""


def ours_config(
    client_id: str, token_url: str, *, expiry_buffer: float | None = None, api_base: str | None = None
) -> OAuth2Config:
    settings: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": SECRET,
        "token_url": token_url,
        "timeout_seconds": 30,
        "retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0},
    }
    if expiry_buffer is not None:
        settings["expiry_buffer_seconds"] = expiry_buffer
    if api_base is not None:
        settings["api_base"] = api_base
    return OAuth2Config.from_dict({"oauth2_providers": {PROVIDER: settings}})


def ours(client_id: str, token_url: str, *, expiry_buffer: float | None = None) -> Contender:
    """A fresh cache with a private store: cold, whatever other caches in this process hold."""
    cache = TokenCache(
        ours_config(client_id, token_url, expiry_buffer=expiry_buffer), store=InMemoryTokenStore()
    )
    get_authorization, aget_authorization = cache.get_authorization, cache.aget_authorization

    def sync() -> Headers:
        return {"Authorization": get_authorization(PROVIDER)}

    async def asynchronous() -> Headers:
        return {"Authorization": await aget_authorization(PROVIDER)}

    contender = Contender(
        OURS,
        client_id,
        sync,
        f'h = {{"Authorization": get_authorization("{PROVIDER}")}}',
        {"get_authorization": get_authorization, "aget_authorization": aget_authorization},
        asynchronous,
        f'h = {{"Authorization": await aget_authorization("{PROVIDER}")}}',
        cache.close,
    )
    contender.stats = lambda: cache.stats(PROVIDER)
    return contender


def httpx_auth(client_id: str, token_url: str, api_base: str, *, margin: float | None = None) -> Contender:
    import httpx
    import httpx_auth as package

    kwargs = {} if margin is None else {"early_expiry": margin}
    auth = package.OAuth2ClientCredentials(token_url, client_id=client_id, client_secret=SECRET, **kwargs)
    url = api_base + "/models"
    request = httpx.Request("GET", url)
    flow, aflow = auth.auth_flow, auth.async_auth_flow

    def sync() -> Headers:
        # A request per call, as httpx builds one: a shared one would be mutated by many threads.
        return next(flow(httpx.Request("GET", url))).headers

    async def asynchronous() -> Headers:
        # As httpx.AsyncClient does: first request of the flow, then aclose().
        generator = aflow(httpx.Request("GET", url))
        try:
            return (await generator.__anext__()).headers
        finally:
            await generator.aclose()

    return Contender(
        HTTPX_AUTH,
        client_id,
        sync,
        "h = next(flow(request)).headers",
        {"flow": flow, "aflow": aflow, "request": request},
        asynchronous,
        "g = aflow(request)\nh = (await g.__anext__()).headers\nawait g.aclose()",
        notes=["async path: httpx.Auth's default async_auth_flow runs the synchronous flow on the loop"],
    )


def authlib(client_id: str, token_url: str, api_base: str, *, margin: float | None = None) -> Contender:
    import requests
    from authlib.integrations.requests_client import OAuth2Session

    kwargs = {} if margin is None else {"leeway": margin}
    session = OAuth2Session(
        client_id=client_id,
        client_secret=SECRET,
        token_endpoint=token_url,
        grant_type="client_credentials",
        **kwargs,
    )
    prepared = requests.Request("GET", api_base + "/models").prepare()
    token_auth = session.token_auth
    url = api_base + "/models"
    holder: dict[str, Any] = {}

    def sync() -> Headers:
        if not session.token:
            session.fetch_token()
        headers: Headers = token_auth(prepared.copy()).headers
        return headers

    def async_client() -> Any:
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        client = holder.get("async")
        if client is None:
            client = holder["async"] = AsyncOAuth2Client(
                client_id=client_id,
                client_secret=SECRET,
                token_endpoint=token_url,
                grant_type="client_credentials",
                **kwargs,
            )
        return client

    async def asynchronous() -> Headers:
        client = async_client()
        if not client.token:
            await client.fetch_token()
        await client.ensure_active_token(client.token)
        headers: Headers = client.token_auth.prepare(url, {}, b"")[1]
        return headers

    def close() -> None:
        session.close()

    contender = Contender(
        AUTHLIB,
        client_id,
        sync,
        "if not session.token:\n    session.fetch_token()\nh = token_auth(prepared).headers",
        {"session": session, "token_auth": token_auth, "prepared": prepared},
        asynchronous,
        "if not client.token:\n    await client.fetch_token()\n"
        "await client.ensure_active_token(client.token)\nh = prepare(url, {}, b'')[1]",
        close,
        notes=["sync: OAuth2Session (requests); async: AsyncOAuth2Client (httpx), a second client"],
    )
    contender.namespace.update(async_client=async_client, url=url)
    return contender


def prepare_async_namespace(contender: Contender) -> None:
    """Authlib's async client must be built inside the running loop that will use it."""
    if contender.name == AUTHLIB:
        client = contender.namespace["async_client"]()
        contender.namespace.update(client=client, prepare=client.token_auth.prepare)


def proxy_auth(client_id: str, token_url: str) -> Contender:
    import litellm
    from litellm.proxy_auth import GenericOAuth2Credential, ProxyAuthHandler

    forget_proxy_auth_module(litellm)

    handler = ProxyAuthHandler(
        credential=GenericOAuth2Credential(client_id=client_id, client_secret=SECRET, token_url=token_url),
        scope="bench",
    )
    get_auth_headers = handler.get_auth_headers

    async def asynchronous() -> Headers:
        # litellm.acompletion runs completion(), which calls get_auth_headers, in the loop's executor.
        return await asyncio.get_running_loop().run_in_executor(None, get_auth_headers)

    return Contender(
        PROXY_AUTH,
        client_id,
        get_auth_headers,
        "h = get_auth_headers()",
        {"get_auth_headers": get_auth_headers},
        asynchronous,
        None,
        notes=["no asyncio API: litellm.acompletion calls it from its executor thread"],
    )


def forget_proxy_auth_module(litellm: Any) -> None:
    """Undo a side effect of ``import litellm.proxy_auth``.

    Importing the subpackage binds it as the attribute ``litellm.proxy_auth``, the same name as
    the setting that ``litellm.completion`` reads; from then on every call tries
    ``litellm.proxy_auth.get_auth_headers()`` on the module, fails and logs a warning. The
    benchmark puts the setting back to ``None`` so that no other contender pays for that.
    """
    if isinstance(litellm.__dict__.get("proxy_auth"), types.ModuleType):
        litellm.proxy_auth = None


def static(client_id: str = "") -> Contender:
    value = "Bearer " + STATIC_API_KEY

    def sync() -> Headers:
        return {"Authorization": value}

    async def asynchronous() -> Headers:
        return {"Authorization": value}

    return Contender(
        STATIC,
        client_id,
        sync,
        'h = {"Authorization": STATIC}',
        {"STATIC": value},
        asynchronous,
        'h = {"Authorization": STATIC}',
    )


def floor() -> Contender:
    """The goal's yardstick: a bare dict lookup plus a monotonic clock read."""
    d = {PROVIDER: object()}

    def sync() -> None:
        d[PROVIDER]
        time.monotonic()

    return Contender(
        "floor: dict lookup + monotonic()",
        "",
        sync,
        "d[k]\nmonotonic()",
        {"d": d, "k": PROVIDER, "monotonic": time.monotonic},
        None,
        "d[k]\nmonotonic()",
    )
