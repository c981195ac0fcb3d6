"""The LiteLLM integration: every ``provider/model`` call goes out with that provider's bearer token.

LiteLLM's synchronous paths ignore header edits made in logging hooks, so the plugin registers
one ``CustomLLM`` per configured provider in ``litellm.custom_provider_map``: LiteLLM routes
every call for the prefix there (completion, streaming, embeddings; SDK, Router and proxy), and
the provider delegates to LiteLLM's own OpenAI-compatible handler at the provider's
``api_base``.

The token never enters LiteLLM: the handler gets a placeholder ``api_key`` and an OpenAI client
whose HTTP client writes ``Authorization: Bearer <token>`` as the request leaves, so logging
payloads, callback kwargs and debug output have nothing to leak. The header value chosen for a
call travels in a context variable of that provider alone (a call for another provider started
inside this one, e.g. by ``asyncio.run`` in a callback, never sees it), and async paths await the
cache, so no token is fetched synchronously on an event loop. A 401 from the gateway invalidates
that token and retries once with a fresh one, before the caller sees anything: one flow
(``_retry_once_on_401``) driven by a sync and an async driver, streams included. A gateway's error
text is cleaned of the provider's header values and token before it reaches the caller.

That HTTP client is the one LiteLLM builds for its own ``openai/...`` calls (its SSL settings,
its aiohttp transport for async calls, its proxy handling), plus the bearer hook and minus
redirects. A forked child drops the clients it inherited, so parent and child never share a
keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import httpx
import litellm
import openai
from litellm.exceptions import APIConnectionError, CallerCredentialAuthenticationError
from litellm.integrations.custom_logger import CustomLogger
from litellm.llms.custom_llm import CustomLLM
from litellm.main import openai_chat_completions

from ._compat import check_provider_names, litellm_routed_names
from ._fork import reset_in_forked_child
from .cache import TokenCache
from .config import OAuth2Config, ProviderSettings, load_config
from .errors import OAuth2AuthenticationError, OAuth2ConfigurationError, OAuth2Error

__all__ = [
    "OAuth2ClientRejectedError",
    "OAuth2Handler",
    "OAuth2Provider",
    "OAuth2ProviderConfigurationError",
    "OAuth2ProviderError",
    "OAuth2TokenUnavailableError",
    "enable",
    "find_oauth2_error",
]

logger = logging.getLogger("litellm_oauth2")

# What LiteLLM sees as the api_key of an OAuth2 provider; the real token is added by _BearerHeader.
API_KEY_PLACEHOLDER = "litellm-oauth2"
# The OpenAI clients follow redirects by default, and the bearer hook runs for every request httpx
# sends: a gateway answering 307 to another host would hand that host the token (and the
# provider's header values). As at the token endpoint, redirects are not followed.
FOLLOW_REDIRECTS = False
# Headers a caller might send that would compete with the bearer token.
_CALLER_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})

# Header values shorter than this are not hidden in gateway error text: they are no secret and
# blanking them would garble the message (a value "1" would turn "401" into "40***").
_MIN_REDACTED_LENGTH = 4
_T = TypeVar("_T")
_J = TypeVar("_J")


class OAuth2ProviderError(OAuth2AuthenticationError):
    """The token for a LiteLLM call could not be obtained; no request was sent.

    Always one of the subclasses below (``OAuth2ProviderError(error, model)`` picks it), each also
    the LiteLLM exception whose Router handling fits (LiteLLM passes its own exceptions to the
    caller unchanged): ``OAuth2TokenUnavailableError`` (``transient``: the Router may retry it) and
    ``OAuth2ClientRejectedError`` (permanent: neither retried on the deployment nor put in
    cooldown). ``except OAuth2ProviderError`` and ``except OAuth2AuthenticationError`` catch both.
    """

    _litellm_base: ClassVar[Any]
    _transient: ClassVar[bool]

    def __new__(cls, error: OAuth2Error, model: str) -> OAuth2ProviderError:
        chosen = _provider_class(error) if cls is OAuth2ProviderError else cls
        return super().__new__(chosen)

    def __init__(self, error: OAuth2Error, model: str) -> None:
        self._litellm_base.__init__(self, message=error.message, llm_provider=error.provider, model=model)
        fields = error if isinstance(error, OAuth2AuthenticationError) else None
        OAuth2AuthenticationError.__init__(
            self,
            error.message,
            error.original_error or error,
            error.provider,
            http_status=fields.http_status if fields else None,
            error=fields.error if fields else None,
            error_description=fields.error_description if fields else None,
            transient=self._transient,
        )
        self.message = error.message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class OAuth2TokenUnavailableError(OAuth2ProviderError, APIConnectionError):
    """A failure that may heal (token endpoint down, 5xx, timeout): a ``litellm.APIConnectionError``,
    which the Router retries (``num_retries``) without cooling the deployment down."""

    _litellm_base = APIConnectionError
    _transient = True


class OAuth2ClientRejectedError(OAuth2ProviderError, CallerCredentialAuthenticationError):
    """A failure that will repeat until the configuration changes (``invalid_client``,
    ``invalid_scope``, a redirect, an invalid token response): a
    ``litellm.CallerCredentialAuthenticationError`` (a 401 ``AuthenticationError`` scoped to a
    credential, not to the deployment), which the Router does not retry on the deployment and never
    cools it down for; a group's other deployments may still be tried."""

    _litellm_base = CallerCredentialAuthenticationError
    _transient = False


class OAuth2ProviderConfigurationError(OAuth2ClientRejectedError, OAuth2ConfigurationError):
    """An ``OAuth2ClientRejectedError`` caused by the configuration (e.g. a broken file found at
    activation by environment variable): ``except OAuth2ConfigurationError`` catches it as well."""


def _provider_class(error: OAuth2Error) -> type[OAuth2ProviderError]:
    """The LiteLLM-facing class for ``error``: the Router retries only what may heal."""
    if isinstance(error, OAuth2ConfigurationError):
        return OAuth2ProviderConfigurationError
    if isinstance(error, OAuth2AuthenticationError) and not error.transient:
        return OAuth2ClientRejectedError
    return OAuth2TokenUnavailableError


def _provider_error(error: OAuth2Error, model: str) -> OAuth2ProviderError:
    """What a LiteLLM call for ``model`` raises when ``error`` left it without a token."""
    return OAuth2ProviderError(error, model=model)


def find_oauth2_error(exc: BaseException | None) -> OAuth2Error | None:
    """The plugin's error behind whatever LiteLLM raised (it wraps some streaming errors)."""
    pending, seen = [exc], set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OAuth2Error):
            return current
        pending += [getattr(current, "original_exception", None), current.__cause__, current.__context__]
    return None


class _BearerHeader:
    """A request event hook of the OpenAI client's HTTP client: writes ``Authorization`` as the
    request leaves (the value chosen for this call, else the cached one). Event hooks are plain
    callables, so this works whichever httpx generation the installed ``openai`` is built on.

    ``chosen`` belongs to this provider alone: a call for another provider started inside this
    one's context (``asyncio.run`` in a callback copies it) reads its own, unset, variable.
    """

    def __init__(self, cache: TokenCache, provider: str) -> None:
        self._get = cache.get_authorization
        self._aget = cache.aget_authorization
        self._provider = provider
        self.chosen: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"litellm_oauth2_authorization_{provider}", default=None
        )

    def __call__(self, request: Any) -> None:
        request.headers["Authorization"] = self.chosen.get() or self._get(self._provider)

    async def on_async_request(self, request: Any) -> None:
        request.headers["Authorization"] = self.chosen.get() or await self._aget(self._provider)


def _is_unauthorized(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 401


class _LiteLLMHttp(NamedTuple):
    """LiteLLM's builders of the HTTP clients behind its own ``openai/...`` calls."""

    ssl_configuration: Callable[..., Any]
    async_transport: Callable[..., Any]
    proxy_mounts: Callable[..., Any]
    http2_enabled: Callable[[], bool]


def _litellm_http() -> _LiteLLMHttp | None:
    """LiteLLM's builders, or None on a LiteLLM that lays them out differently."""
    try:
        from litellm.llms.custom_httpx import http_handler

        return _LiteLLMHttp(
            http_handler.get_ssl_configuration,
            http_handler.AsyncHTTPHandler.create_async_transport,
            http_handler.AsyncHTTPHandler.create_httpx_proxy_mounts,
            http_handler.http2_enabled,
        )
    except (ImportError, AttributeError):
        return None


_LITELLM_HTTP = _litellm_http()


def _sync_http_client(
    verify: bool | str | None, hook: Callable[[Any], None]
) -> httpx.Client | openai.DefaultHttpxClient:
    """The client LiteLLM builds for a synchronous ``openai/...`` call (``ssl_verify``,
    ``SSL_CERT_FILE``, ``SSL_VERIFY``, HTTP/2 switch), with ``hook`` and without redirects.

    ``verify`` None leaves verification to LiteLLM's settings. Without LiteLLM's builders,
    openai's default client (verification on unless ``verify`` says otherwise).
    """
    hooks = {"request": [hook]}
    if _LITELLM_HTTP is None:
        return openai.DefaultHttpxClient(
            event_hooks=hooks, verify=True if verify is None else verify, follow_redirects=FOLLOW_REDIRECTS
        )
    return httpx.Client(
        verify=_LITELLM_HTTP.ssl_configuration(verify),
        http2=_LITELLM_HTTP.http2_enabled(),
        follow_redirects=FOLLOW_REDIRECTS,
        event_hooks=hooks,
    )


def _async_http_client(
    verify: bool | str | None, hook: Callable[[Any], Any]
) -> httpx.AsyncClient | openai.DefaultAsyncHttpxClient:
    """The client LiteLLM builds for an async ``openai/...`` call: its aiohttp transport (unless
    ``disable_aiohttp_transport``, HTTP/2 or ``force_ipv4`` choose httpx's) with its SSL settings
    and proxy mounts, with ``hook`` and without redirects. Event hooks belong to the httpx client,
    so they run whichever transport sends the request.
    """
    hooks = {"request": [hook]}
    if _LITELLM_HTTP is None:
        return openai.DefaultAsyncHttpxClient(
            event_hooks=hooks, verify=True if verify is None else verify, follow_redirects=FOLLOW_REDIRECTS
        )
    ssl_config = _LITELLM_HTTP.ssl_configuration(verify)
    transport = _LITELLM_HTTP.async_transport(
        ssl_context=ssl_config if isinstance(ssl_config, ssl.SSLContext) else None,
        ssl_verify=ssl_config if isinstance(ssl_config, bool) else None,
    )
    return httpx.AsyncClient(
        verify=ssl_config,
        transport=transport,
        mounts=_LITELLM_HTTP.proxy_mounts(transport, verify=ssl_config, cert=None),
        http2=_LITELLM_HTTP.http2_enabled(),
        follow_redirects=FOLLOW_REDIRECTS,
        event_hooks=hooks,
    )


class OAuth2Provider(CustomLLM):
    """LiteLLM's custom provider for one OAuth2-protected, OpenAI-compatible gateway."""

    def __init__(self, settings: ProviderSettings, cache: TokenCache) -> None:
        super().__init__()
        self.name = settings.provider_name
        self.settings = settings
        self._cache = cache
        self._bearer = _BearerHeader(cache, self.name)
        self._sync_client: openai.OpenAI | None = None
        self._async_clients: weakref.WeakKeyDictionary[Any, openai.AsyncOpenAI] = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()
        reset_in_forked_child(self)
        self._redacted = [v for v in settings.header_values().values() if len(v) >= _MIN_REDACTED_LENGTH]

    def __repr__(self) -> str:
        return f"OAuth2Provider({self.name!r})"

    # -- LiteLLM entry points (LiteLLM passes everything by keyword) -----------------------------

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(openai_chat_completions.completion, kwargs, embedding=False)

    def streaming(self, *args: Any, **kwargs: Any) -> Any:
        # The handler's own stream wrapper; LiteLLM wraps it again and passes chunks through.
        return self._call(openai_chat_completions.completion, kwargs, embedding=False)

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        return await self._acall(openai_chat_completions.completion, kwargs, embedding=False)

    def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        # A plain function: LiteLLM calls it from its executor thread, so the token is fetched
        # here and a failure reaches the caller at call time, not wrapped inside the first chunk.
        # On an event loop thread the stream awaits the token instead.
        authorization = None if _on_event_loop() else self._authorization(kwargs)
        return self._astream(kwargs, authorization)

    def embedding(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(openai_chat_completions.embedding, kwargs, embedding=True)

    async def aembedding(self, *args: Any, **kwargs: Any) -> Any:
        return await self._acall(openai_chat_completions.embedding, kwargs, embedding=True)

    # -- one call with one retry on 401: the flow is written once, below; these drive it ---------

    def _call(self, handler: Callable[..., _T], kwargs: dict[str, Any], *, embedding: bool) -> _T:
        flow = _retry_once_on_401(self.name, None)
        outcome: Any = None
        failure: Exception | None = None
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(outcome)
            except StopIteration as done:
                result: _T = done.value
                return result
            outcome, failure = None, None
            try:
                if isinstance(step, _Send):
                    outcome = self._send(handler, kwargs, step.authorization, embedding=embedding)
                elif isinstance(step, _Invalidate):
                    self._cache.invalidate(self.name, step.token)
                else:
                    outcome = self._authorization(kwargs)
            except Exception as exc:
                failure = exc

    async def _acall(
        self,
        handler: Callable[..., Any],
        kwargs: dict[str, Any],
        *,
        embedding: bool,
        authorization: str | None = None,
    ) -> Any:
        flow = _retry_once_on_401(self.name, authorization)
        outcome: Any = None
        failure: Exception | None = None
        while True:
            try:
                step = flow.throw(failure) if failure is not None else flow.send(outcome)
            except StopIteration as done:
                return done.value
            outcome, failure = None, None
            try:
                if isinstance(step, _Send):
                    outcome = await self._asend(handler, kwargs, step.authorization, embedding=embedding)
                elif isinstance(step, _Invalidate):
                    # A shared store may do network I/O on invalidation: keep it off the event loop.
                    await asyncio.to_thread(self._cache.invalidate, self.name, step.token)
                else:
                    outcome = await self._aauthorization(kwargs)
            except Exception as exc:
                failure = exc

    async def _astream(self, kwargs: dict[str, Any], authorization: str | None) -> AsyncIterator[Any]:
        handler = openai_chat_completions.completion
        stream = await self._acall(handler, kwargs, embedding=False, authorization=authorization)
        async for chunk in stream:
            yield chunk

    def _authorization(self, kwargs: dict[str, Any]) -> str:
        """The ``Authorization`` value for this call; raises ``OAuth2ProviderError``."""
        try:
            return self._cache.get_authorization(self.name)
        except OAuth2Error as exc:
            raise _provider_error(exc, model=str(kwargs.get("model"))) from exc

    async def _aauthorization(self, kwargs: dict[str, Any]) -> str:
        """``_authorization`` for asyncio: waits without blocking the event loop."""
        try:
            return await self._cache.aget_authorization(self.name)
        except OAuth2Error as exc:
            raise _provider_error(exc, model=str(kwargs.get("model"))) from exc

    def _send(
        self, handler: Callable[..., _T], kwargs: dict[str, Any], authorization: str, *, embedding: bool
    ) -> _T:
        """Call LiteLLM's OpenAI handler with our client; ``authorization`` is what the hook sends."""
        chosen = self._bearer.chosen.set(authorization)
        try:
            return handler(**self._handler_arguments(kwargs, embedding=embedding, is_async=False))
        except Exception as exc:
            self._redact(exc, authorization)
            raise
        finally:
            self._bearer.chosen.reset(chosen)

    async def _asend(
        self, handler: Callable[..., Any], kwargs: dict[str, Any], authorization: str, *, embedding: bool
    ) -> Any:
        """``_send`` for asyncio: the request leaves while the handler's coroutine runs, in here."""
        chosen = self._bearer.chosen.set(authorization)
        try:
            return await handler(**self._handler_arguments(kwargs, embedding=embedding, is_async=True))
        except Exception as exc:
            self._redact(exc, authorization)
            raise
        finally:
            self._bearer.chosen.reset(chosen)

    def _redact(self, exc: Exception, authorization: str) -> None:
        """Blank this provider's header values and the token out of a gateway error's text, in
        place (class, status and response stay): a gateway may echo the request in its body."""
        secrets = [*self._redacted, _token_of(authorization)]
        # Longest first, so a value containing another is blanked whole; JSON bodies escape.
        forms = sorted(
            {form for secret in secrets for form in (secret, json.dumps(secret)[1:-1])}, key=len, reverse=True
        )
        exc.args = tuple(_blank(arg, forms) for arg in exc.args)
        for name in ("message", "body"):
            value = getattr(exc, name, None)
            if isinstance(value, str | dict | list):
                with contextlib.suppress(AttributeError):  # a read-only attribute stays as it is
                    setattr(exc, name, _blank(value, forms))

    def _handler_arguments(
        self, kwargs: dict[str, Any], *, embedding: bool, is_async: bool
    ) -> dict[str, Any]:
        optional_params = dict(kwargs.get("optional_params") or {})
        extra_headers = optional_params.get("extra_headers")
        if extra_headers:
            optional_params["extra_headers"] = {
                name: value
                for name, value in extra_headers.items()
                if name.lower() not in _CALLER_CREDENTIAL_HEADERS
            }
        arguments: dict[str, Any] = {
            "model": kwargs["model"],
            "model_response": kwargs["model_response"],
            "optional_params": optional_params,
            "timeout": kwargs.get("timeout") or 600.0,
            "litellm_params": kwargs.get("litellm_params") or {},
            "logging_obj": kwargs["logging_obj"],
            "api_base": self.settings.api_base,
            "api_key": API_KEY_PLACEHOLDER,
            "client": self._client(is_async),
        }
        if embedding:
            arguments.update(input=kwargs["input"], aembedding=is_async)
        else:
            arguments.update(
                messages=kwargs["messages"],
                acompletion=is_async,
                custom_llm_provider="openai",
                print_verbose=kwargs.get("print_verbose"),
            )
        return arguments

    def _client(self, is_async: bool) -> openai.OpenAI | openai.AsyncOpenAI:
        """One client per provider (per event loop for async, as LiteLLM keeps its own), built on
        the HTTP client LiteLLM would use for an ``openai/...`` call, read when first needed.

        ``litellm.client_session`` / ``aclient_session`` are not used: our bearer hook on them
        would send the token with the caller's other calls, and sending through them would show
        it to their hooks and let their ``auth`` replace it.
        """
        options: dict[str, Any] = {
            "api_key": API_KEY_PLACEHOLDER,
            "base_url": self.settings.api_base,
            "default_headers": self.settings.header_values(),
            "max_retries": 0,
        }
        if not is_async:
            if self._sync_client is None:
                with self._clients_lock:
                    if self._sync_client is None:
                        self._note_caller_session(litellm.client_session, "client_session")
                        http = _sync_http_client(self._verify(), self._bearer)
                        # openai takes LiteLLM's httpx clients (as LiteLLM gives them); its
                        # annotation names only httpx2's.
                        self._sync_client = openai.OpenAI(**options, http_client=http)  # type: ignore[arg-type]
            return self._sync_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            self._note_caller_session(litellm.aclient_session, "aclient_session")
            http_async = _async_http_client(self._verify(), self._bearer.on_async_request)
            client = self._async_clients[loop] = openai.AsyncOpenAI(
                **options,
                http_client=http_async,  # type: ignore[arg-type]
            )
        return client

    def _verify(self) -> bool | str | None:
        """The config's ``verify`` when the file sets it; else None: LiteLLM's ``ssl_verify`` applies."""
        return self.settings.verify if "verify" in self.settings.model_fields_set else None

    def _note_caller_session(self, session: object, name: str) -> None:
        if session is not None:
            logger.info(
                "provider %s: litellm.%s is set; OAuth2 calls use their own HTTP client, "
                "so the bearer token never travels with the session's other calls",
                self.name,
                name,
            )

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()

    def _after_fork_in_child(self) -> None:
        """In a forked child: drop (not close) the inherited clients, whose pooled connections
        are the parent's sockets too; the next call builds its own."""
        self._clients_lock = threading.Lock()
        self._sync_client = None
        self._async_clients = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class _Authorize:
    """A step of the 401 flow: the driver answers with the ``Authorization`` value to send."""


@dataclass(frozen=True, slots=True)
class _Send:
    """A step of the 401 flow: the driver sends the call with ``authorization`` and answers with
    the handler's result, or throws its exception into the flow."""

    authorization: str


@dataclass(frozen=True, slots=True)
class _Invalidate:
    """A step of the 401 flow: the driver drops ``token`` from the cache."""

    token: str


def _retry_once_on_401(
    provider: str, authorization: str | None
) -> Generator[_Authorize | _Send | _Invalidate, Any, Any]:
    """The 401 policy, written once for the sync and async drivers (httpx's ``Auth.auth_flow``
    shape): send with the call's header value (``authorization``, or one the driver fetches); on
    a 401 drop that token and send once more with a new one. Any other failure is raised as is."""
    if authorization is None:
        authorization = yield _Authorize()
    try:
        return (yield _Send(authorization))
    except Exception as exc:
        if not _is_unauthorized(exc):
            raise
    yield _Invalidate(_token_of(authorization))
    logger.info("provider %s: gateway answered 401, retrying once with a new token", provider)
    return (yield _Send((yield _Authorize())))


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _token_of(authorization: str) -> str:
    return authorization.removeprefix("Bearer ")


def _blank(value: _J, forms: list[str]) -> _J:
    """``value`` (text, or a parsed JSON body) with every one of ``forms`` replaced by ``***``."""
    if isinstance(value, str):
        for form in forms:
            value = value.replace(form, "***")  # type: ignore[assignment]
        return value
    if isinstance(value, dict):
        return {key: _blank(item, forms) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [_blank(item, forms) for item in value]  # type: ignore[return-value]
    return value


class _MisconfiguredProvider(CustomLLM):
    """Stands in for a provider whose configuration failed to load: every call says why."""

    def __init__(self, error: OAuth2ConfigurationError) -> None:
        super().__init__()
        self.error = error

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise _provider_error(self.error, model=str(kwargs.get("model")))

    completion = streaming = embedding = _fail

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)

    async def aembedding(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)

    def astreaming(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)


class OAuth2Handler(CustomLogger):
    """Gives every call for a configured provider an OAuth2 bearer token.

    Constructing it registers the providers with LiteLLM; ``enable()`` also adds it to
    ``litellm.callbacks`` once per process. In the proxy, its pre-call hook re-registers the
    providers if the proxy's own config replaced ``litellm.custom_provider_map``.
    """

    def __init__(self, config_path: str | Path | None = None, *, config: OAuth2Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else load_config(config_path)
        check_provider_names(self.config.oauth2_providers)
        self.cache = TokenCache(self.config)
        self.providers = {
            name: OAuth2Provider(settings, self.cache)
            for name, settings in self.config.oauth2_providers.items()
        }
        missing_base = [
            name for name, settings in self.config.oauth2_providers.items() if not settings.api_base
        ]
        if missing_base:
            raise OAuth2ConfigurationError(
                f"provider '{missing_base[0]}': field 'api_base' is required to route "
                f"'{missing_base[0]}/<model>' calls; set it to the gateway's OpenAI-compatible base URL",
                provider=missing_base[0],
            )
        self.register()

    def __repr__(self) -> str:
        return f"OAuth2Handler(providers={sorted(self.providers)!r})"

    def register(self) -> None:
        """Put this handler's providers into ``litellm.custom_provider_map``, keeping other entries."""
        _register({name: provider for name, provider in self.providers.items()})

    def ensure_registered(self) -> None:
        present = {
            entry.get("provider"): entry.get("custom_handler") for entry in litellm.custom_provider_map
        }
        if any(present.get(name) is not provider for name, provider in self.providers.items()):
            logger.info("litellm custom_provider_map was replaced; registering OAuth2 providers again")
            self.register()

    def get_token(self, name: str) -> str:
        """The current access token of provider ``name``, for callers that need it raw."""
        return self.cache.get_token(name)

    async def aget_token(self, name: str) -> str:
        return await self.cache.aget_token(name)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        self.ensure_registered()

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.cache.close()


def _register(handlers: dict[str, CustomLLM]) -> None:
    kept = [entry for entry in litellm.custom_provider_map if entry.get("provider") not in handlers]
    litellm.custom_provider_map = kept + [
        {"provider": name, "custom_handler": handler} for name, handler in handlers.items()
    ]
    litellm.utils.custom_llm_setup()  # type: ignore[no-untyped-call]


_process_handler: OAuth2Handler | None = None
_process_lock = threading.Lock()


def enable(config_path: str | Path | None = None, *, config: OAuth2Config | None = None) -> OAuth2Handler:
    """Switch the plugin on for this process: one handler, registered once in ``litellm.callbacks``.

    ``config`` (already loaded) takes the place of reading ``config_path``. Calling it again, or
    together with activation by environment variable, returns the same handler and never
    registers it twice. Raises ``OAuth2ConfigurationError`` for a configuration that cannot be used.
    """
    global _process_handler
    with _process_lock:
        if _process_handler is None:
            _process_handler = OAuth2Handler(config_path, config=config)
        handler = _process_handler
        if handler not in litellm.callbacks:
            litellm.callbacks.append(handler)
        handler.ensure_registered()
    return handler


def _register_broken_config(error: OAuth2ConfigurationError, names: list[str]) -> None:
    """After a failed activation, make calls to the providers ``names`` fail with ``error``.

    Names LiteLLM serves itself are left alone: a stand-in could never receive their calls.
    """
    routed = litellm_routed_names()
    usable = [name for name in names if name not in routed]
    if usable:
        stand_in = _MisconfiguredProvider(error)
        _register({name: stand_in for name in usable})
