"""One OAuth2 provider as LiteLLM meets it: where each call goes, with which client, and the
errors a call raises when it cannot have a token.

``route`` turns the kwargs of a call for ``name/<model>`` into the kwargs of a call to one of
LiteLLM's built-in providers (``openai``, ``azure``, ``azure_text``, ``anthropic``,
``hosted_vllm``; see ``_styles``) at the provider's ``api_base``, with a placeholder ``api_key``
and a ``client=`` the provider owns. The caller's own credentials and base URL are dropped. The
client's HTTP client carries ``OAuth2BearerAuth``: the token is written as the request leaves,
so it never enters LiteLLM's kwargs, logging payloads or debug output. Redirects are not
followed (a 307 to another host would hand it the token).

The provider is also LiteLLM's ``CustomLLM`` for its prefix, so ``name/`` is a known provider
(Router model lists, the proxy's config). Chat and embedding calls that reach it directly (a
function bound with ``from litellm import completion`` before the plugin was enabled) are
served with LiteLLM's OpenAI handler and the same client, for the ``openai`` style.

Clients are built when first needed, one per kind (and api-version), per event loop for async
clients (as LiteLLM keeps its own); those of a closed loop are let go when another loop builds
its first client, so an ``asyncio.run`` per job leaves nothing behind. A forked child drops the clients it inherited, so parent and
child never share a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeVar

import openai
from litellm.exceptions import APIConnectionError, CallerCredentialAuthenticationError
from litellm.llms.custom_llm import CustomLLM
from litellm.main import openai_chat_completions

from . import _compat
from ._bearer import OAuth2BearerAuth
from ._files import file_states
from ._fork import reset_in_forked_child
from ._styles import Target, target
from .cache import TokenCache
from .config import ProviderSettings
from .errors import OAuth2AuthenticationError, OAuth2ConfigurationError, OAuth2Error

__all__ = [
    "API_KEY_PLACEHOLDER",
    "MisconfiguredProvider",
    "OAuth2ClientRejectedError",
    "OAuth2Provider",
    "OAuth2ProviderConfigurationError",
    "OAuth2ProviderError",
    "OAuth2TokenUnavailableError",
    "find_oauth2_error",
]

logger = logging.getLogger("litellm_oauth2")

# What LiteLLM sees as the api_key of an OAuth2 provider; the real token is added by the auth.
API_KEY_PLACEHOLDER = "litellm-oauth2"
# The bearer auth runs for every request httpx sends: a gateway answering 307 to another host
# would hand that host the token (and the provider's header values).
FOLLOW_REDIRECTS = False
# A caller's credentials, base URL and client for the call: the provider's own replace them.
_CALLER_ARGUMENTS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "client",
        "custom_llm_provider",
        "api_version",
        "azure_ad_token",
        "azure_ad_token_provider",
        "azure_username",
        "azure_password",
        "tenant_id",
        "client_id",
        "client_secret",
        "litellm_credential_name",
        "litellm_credentials",
    }
)
# Headers a caller might send that would compete with the bearer token.
_CALLER_CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})

# Header values shorter than this are not hidden in gateway error text: they are no secret and
# blanking them would garble the message (a value "1" would turn "401" into "40***").
_MIN_REDACTED_LENGTH = 4
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


class OAuth2Provider(CustomLLM):
    """Routes the calls of one OAuth2-protected gateway; LiteLLM's ``CustomLLM`` for its prefix."""

    def __init__(self, settings: ProviderSettings, cache: TokenCache) -> None:
        super().__init__()
        self.name = settings.provider_name
        self.settings = settings
        self._cache = cache
        self._auth = OAuth2BearerAuth(cache, self.name, settings.header_values())
        self._clients_lock = threading.Lock()
        self._sync_clients: dict[Target, Any] = {}
        # Not weak: a client's connections refer to their loop, so a weak key would never go.
        # Entries of closed loops are dropped when the next loop builds its first client.
        self._async_clients: dict[asyncio.AbstractEventLoop, dict[Target, Any]] = {}
        # The gateway client certificate's files: when they change, the clients (and their pooled
        # connections, which keep presenting the old certificate) are replaced.
        chosen = settings.gateway_certificate
        self._certificate_files: tuple[str, ...] = chosen[:2] if chosen else ()
        self._certificate_state = file_states(self._certificate_files)
        reset_in_forked_child(self)
        self._redacted = [v for v in settings.header_values().values() if len(v) >= _MIN_REDACTED_LENGTH]

    def __repr__(self) -> str:
        return f"OAuth2Provider({self.name!r})"

    # -- the doors' side: token first, then the routed call ----------------------------------

    def authorize(self, model: object) -> None:
        """Have a token before any request leaves; raises ``OAuth2ProviderError`` (0 requests sent)."""
        try:
            self._cache.get_authorization(self.name)
        except OAuth2Error as exc:
            raise OAuth2ProviderError(exc, model=str(model)) from exc

    async def aauthorize(self, model: object) -> None:
        """``authorize`` for asyncio: waits without blocking the event loop."""
        try:
            await self._cache.aget_authorization(self.name)
        except OAuth2Error as exc:
            raise OAuth2ProviderError(exc, model=str(model)) from exc

    def route(self, endpoint: str, call: dict[str, Any], *, is_async: bool) -> dict[str, Any]:
        """The kwargs that send ``call`` (for ``name/<model>``) to this provider's gateway.

        Raises:
            OAuth2ProviderConfigurationError: the provider's ``api_style`` cannot serve ``endpoint``.
        """
        try:
            where = target(self.settings, endpoint, call.get("api_version"))
        except OAuth2ConfigurationError as exc:
            raise OAuth2ProviderError(exc, model=str(call.get("model"))) from None
        routed = {key: value for key, value in call.items() if key not in _CALLER_ARGUMENTS}
        model = call.get("model")
        if isinstance(model, str) and model.startswith(f"{self.name}/"):
            routed["model"] = f"{where.provider}/{model.removeprefix(f'{self.name}/')}"
        else:  # get/delete of a stored response: addressed by custom_llm_provider
            routed["custom_llm_provider"] = where.provider
        routed["api_base"] = where.api_base
        routed["api_key"] = API_KEY_PLACEHOLDER
        if where.api_version is not None and where.provider != "openai":
            routed["api_version"] = where.api_version
            if endpoint == "responses":
                self._choose_responses_version(call, routed)
        for name in ("extra_headers", "headers"):
            if isinstance(call.get(name), dict):
                routed[name] = _without_credentials(call[name])
        routed["client"] = self.client(where, is_async=is_async)
        return routed

    def _choose_responses_version(self, call: dict[str, Any], routed: dict[str, Any]) -> None:
        """Set the api-version of an Azure deployment's Responses call: the call's own
        (``responses_api_version``, then ``api_version``), else the provider's
        ``responses_api_version``, else its ``api_version``; whichever argument the installed
        LiteLLM reads for it (``_compat.RESPONSES_API_VERSION_READ``)."""
        own_version = call.get("responses_api_version") or call.get("api_version")
        configured = self.settings.responses_api_version
        if _compat.RESPONSES_API_VERSION_READ:
            if configured and not own_version:
                routed["responses_api_version"] = configured
            return
        routed.pop("responses_api_version", None)
        routed["api_version"] = own_version or configured or routed["api_version"]

    def failure_of(self, exc: Exception, started: float) -> Exception:
        """What a routed call that raised ``exc`` raises: the plugin's error when the gateway's 401
        came after a token renewal failed during the call (since ``started``), else ``exc``
        cleaned of secrets."""
        renewal = self._auth.renew_failure
        if getattr(exc, "status_code", None) == 401 and renewal is not None and renewal[0] >= started:
            error = OAuth2ProviderError(renewal[1], model=str(getattr(exc, "model", None)))
            error.__cause__ = exc
            return error
        self.redact(exc)
        return exc

    def redact(self, exc: Exception) -> None:
        """Blank this provider's header values and recent tokens out of a gateway error's text, in
        place (class, status and response stay): a gateway may echo the request in its body."""
        secrets = [*self._redacted, *(value.removeprefix("Bearer ") for value in self._auth.recently_sent)]
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

    # -- clients ------------------------------------------------------------------------------

    def client(self, where: Target, *, is_async: bool) -> Any:
        """The client for calls going to ``where`` (async: of the running event loop)."""
        if self._certificate_files:
            self._follow_certificate_files()
        if not is_async:
            with self._clients_lock:
                client = self._sync_clients.get(where)
                if client is None:
                    client = self._sync_clients[where] = self._build(where, is_async=False)
                return client
        loop = asyncio.get_running_loop()
        clients = self._async_clients.get(loop)
        if clients is None:
            with self._clients_lock:
                live = {known: kept for known, kept in self._async_clients.items() if not known.is_closed()}
                clients = live[loop] = {}
                self._async_clients = live
        client = clients.get(where)
        if client is None:
            client = clients[where] = self._build(where, is_async=True)
        return client

    def _follow_certificate_files(self) -> None:
        """Drop the clients when the gateway certificate files changed, so the next call's
        handshake presents the renewed certificate (calls in flight finish on the old clients,
        which are left to the garbage collector rather than closed under them)."""
        state = file_states(self._certificate_files)
        if state == self._certificate_state:
            return
        with self._clients_lock:
            if state == self._certificate_state:
                return
            self._certificate_state = state
            self._sync_clients = {}
            self._async_clients = {}
        logger.info(
            "provider %s: the gateway client certificate changed; new clients present it",
            self.name,
            extra={"provider": self.name, "event": "gateway_certificate_changed"},
        )

    def _build(self, where: Target, *, is_async: bool) -> Any:
        verify = self.settings.verify if "verify" in self.settings.model_fields_set else None
        certificate = self._gateway_certificate()
        http: Any = (
            _compat.async_http_client(verify, self._auth, FOLLOW_REDIRECTS, certificate)
            if is_async
            else _compat.sync_http_client(verify, self._auth, FOLLOW_REDIRECTS, certificate)
        )
        if where.client_kind == "http":
            if is_async:
                return _compat.async_litellm_http_handler(http)
            return _compat.sync_litellm_http_handler(http)
        if where.client_kind == "azure":
            azure = openai.AsyncAzureOpenAI if is_async else openai.AzureOpenAI
            return azure(
                azure_endpoint=where.api_base,
                api_version=where.api_version,
                azure_ad_token=API_KEY_PLACEHOLDER,
                http_client=http,
                max_retries=0,
            )
        plain = openai.AsyncOpenAI if is_async else openai.OpenAI
        return plain(api_key=API_KEY_PLACEHOLDER, base_url=where.api_base, http_client=http, max_retries=0)

    def _gateway_certificate(self) -> _compat.ClientCertificate | None:
        """The client certificate for the gateway (mutual TLS), its password in clear for the TLS layer."""
        chosen = self.settings.gateway_certificate
        if chosen is None:
            return None
        certificate_file, key_file, password = chosen
        return certificate_file, key_file, None if password is None else password.get_secret_value()

    def close(self) -> None:
        with self._clients_lock:
            clients, self._sync_clients = list(self._sync_clients.values()), {}
        for client in clients:
            client.close()

    def _after_fork_in_child(self) -> None:
        """In a forked child: drop (not close) the inherited clients, whose pooled connections
        are the parent's sockets too; the next call builds its own."""
        self._clients_lock = threading.Lock()
        self._sync_clients = {}
        self._async_clients = {}

    # -- LiteLLM's CustomLLM entry points: calls no door routed --------------------------------

    def completion(self, *args: Any, **kwargs: Any) -> Any:
        return self._direct(openai_chat_completions.completion, kwargs, embedding=False, is_async=False)

    streaming = completion

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        return await self._adirect(openai_chat_completions.completion, kwargs, embedding=False)

    def astreaming(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        return self._astream(kwargs)

    def embedding(self, *args: Any, **kwargs: Any) -> Any:
        return self._direct(openai_chat_completions.embedding, kwargs, embedding=True, is_async=False)

    async def aembedding(self, *args: Any, **kwargs: Any) -> Any:
        return await self._adirect(openai_chat_completions.embedding, kwargs, embedding=True)

    def _direct(
        self, handler: Callable[..., Any], kwargs: dict[str, Any], *, embedding: bool, is_async: bool
    ) -> Any:
        self.authorize(kwargs.get("model"))
        arguments = self._handler_arguments(kwargs, embedding=embedding, is_async=is_async)
        try:
            return handler(**arguments)
        except Exception as exc:
            self.redact(exc)
            raise

    async def _adirect(self, handler: Callable[..., Any], kwargs: dict[str, Any], *, embedding: bool) -> Any:
        await self.aauthorize(kwargs.get("model"))
        arguments = self._handler_arguments(kwargs, embedding=embedding, is_async=True)
        try:
            return await handler(**arguments)
        except Exception as exc:
            self.redact(exc)
            raise

    async def _astream(self, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        stream = await self._adirect(openai_chat_completions.completion, kwargs, embedding=False)
        async for chunk in stream:
            yield chunk

    def _handler_arguments(
        self, kwargs: dict[str, Any], *, embedding: bool, is_async: bool
    ) -> dict[str, Any]:
        """LiteLLM's OpenAI handler arguments for a call that reached the ``CustomLLM``.

        Raises:
            OAuth2ProviderConfigurationError: the provider is not of the ``openai`` style; its
            calls need the plugin's doors (``litellm_oauth2.enable()`` before binding LiteLLM's functions).
        """
        if self.settings.api_style != "openai":
            error = OAuth2ConfigurationError(
                f"provider '{self.name}' (api_style '{self.settings.api_style}'): this call bypassed the "
                "plugin's routing; call litellm_oauth2.enable() before 'from litellm import ...' binds "
                "LiteLLM's functions, or call them as litellm.<function>",
                provider=self.name,
                field="api_style",
            )
            raise OAuth2ProviderError(error, model=str(kwargs.get("model")))
        optional_params = dict(kwargs.get("optional_params") or {})
        if isinstance(optional_params.get("extra_headers"), dict):
            optional_params["extra_headers"] = _without_credentials(optional_params["extra_headers"])
        where = target(self.settings, "embedding" if embedding else "completion")
        arguments: dict[str, Any] = {
            "model": kwargs["model"],
            "model_response": kwargs["model_response"],
            "optional_params": optional_params,
            "timeout": kwargs.get("timeout") or 600.0,
            "litellm_params": kwargs.get("litellm_params") or {},
            "logging_obj": kwargs["logging_obj"],
            "api_base": where.api_base,
            "api_key": API_KEY_PLACEHOLDER,
            "client": self.client(where, is_async=is_async),
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


class MisconfiguredProvider(CustomLLM):
    """Stands in for a provider whose configuration failed to load: every call says why."""

    def __init__(self, error: OAuth2ConfigurationError) -> None:
        super().__init__()
        self.error = error

    def fail(self, model: object) -> OAuth2ProviderError:
        return OAuth2ProviderError(self.error, model=str(model))

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise self.fail(kwargs.get("model"))

    completion = streaming = embedding = _fail

    async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)

    async def aembedding(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)

    def astreaming(self, *args: Any, **kwargs: Any) -> Any:
        return self._fail(**kwargs)


def _without_credentials(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value for name, value in headers.items() if str(name).lower() not in _CALLER_CREDENTIAL_HEADERS
    }


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
