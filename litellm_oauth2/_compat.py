"""The LiteLLM internals this package relies on, and the facts about them it assumes.

Only LiteLLM-facing code imports this module (it imports LiteLLM); importing it changes
nothing. Each fact below, read off litellm 1.110.2 and checked on 1.108.0 (the oldest supported;
where it differs, the fact says how), has a test in ``tests/test_compat.py`` named after it, so an
upgrade that breaks one fails a test that says which.

Which provider prefixes LiteLLM routes itself, whatever ``custom_provider_map`` says
(``litellm_core_utils/get_llm_provider_logic.py`` and ``completion`` in ``main.py``):

* ``json_registry_routes_first``: ``get_llm_provider`` looks a prefix up in
  ``JSONProviderRegistry`` (``llms/openai_like/json_loader.py``) before anything else, and
  ``completion`` serves those providers with its OpenAI-compatible handler.
* ``provider_list_routes_before_custom_map``: a prefix in ``litellm.provider_list`` (which starts
  as ``LlmProvidersSet``) is routed by LiteLLM, ahead of ``custom_provider_map``.
* ``custom_setup_lists_custom_names``: ``custom_llm_setup`` appends every ``custom_provider_map``
  name to ``provider_list`` and to ``litellm._custom_providers``; a name found in both lists was
  added by a custom provider (this plugin's, for one), not by LiteLLM.
* ``openai_compatible_served_first``: ``completion`` hands every name in
  ``litellm.openai_compatible_providers`` (``constants.py``) to its own OpenAI-compatible handler
  before it looks at custom providers; ``anyscale`` is listed there, not in ``LlmProvidersSet``.
* ``dispatched_by_literal_name``: ``completion`` also compares a few names literally before its
  custom-provider branch, names no list holds: ``_DISPATCHED_BY_NAME``.

How a call reaches the gateway with the plugin's client (``utils.py``, ``main.py``, ``llms/``):

* ``custom_provider_map_makes_prefix_known``: an entry in ``litellm.custom_provider_map`` followed
  by ``utils.custom_llm_setup()`` makes ``name/<model>`` resolvable (Router model lists, proxy
  config) and sends chat and embedding calls that no door routed to that ``CustomLLM``.
* ``endpoints_looked_up_at_call_time``: the Router and the proxy call ``litellm.<endpoint>`` by
  attribute at call time, so the plugin's wrappers of those attributes see their calls. LiteLLM
  1.108's Router binds ``aresponses``, ``amoderation`` (and ``responses``, ``aget_responses``,
  ``adelete_responses``, ``anthropic_messages``) when it is built (``router.py``,
  ``_initialize_core_endpoints``): harmless here, since a Router can name a plugin prefix only
  once the plugin is enabled, which installs the wrappers first (its async calls also meet the
  deployment hook below).
* ``async_deployment_hook_rewrites_kwargs``: every async endpoint awaits the callbacks'
  ``async_pre_call_deployment_hook(kwargs, call_type)`` and continues with the dict returned
  (also the path of ``litellm.anthropic.messages.acreate``, which binds its function early);
  LiteLLM 1.108 passes ``call_type=None`` for ``aget_responses``/``adelete_responses`` and keeps the
  name in ``kwargs["litellm_logging_obj"].call_type``.
* ``client_kind_per_endpoint``: ``client=`` is honoured when it is an openai SDK client for chat,
  embeddings, text completions, images, audio and moderation, and a LiteLLM ``HTTPHandler`` /
  ``AsyncHTTPHandler`` for responses (and get/delete), rerank and Anthropic. An openai SDK client
  given to the latter is silently replaced by LiteLLM's own (which holds only the placeholder
  key); an ``HTTPHandler`` given to the former fails the call. On those LiteLLM-handler endpoints
  (openai responses, hosted_vllm rerank) a gateway's 401 with OpenAI's error body
  (``"type": "invalid_request_error"``) is an ``AuthenticationError`` from 1.109, a
  ``BadRequestError`` (status 400, the 401 in its ``response``) on 1.108
  (``litellm_core_utils/exception_mapping_utils.py``).
* ``responses_api_version_read``: for an Azure deployment, LiteLLM 1.109+ sends a Responses call's
  ``responses_api_version`` as its api-version, and a dated GA ``api_version`` without one goes to
  ``/openai/v1/responses?api-version=preview``; 1.108 knows no ``responses_api_version`` and sends
  ``/openai/responses?api-version=<api_version>`` (``llms/azure/responses/transformation.py``).
  ``RESPONSES_API_VERSION_READ`` says which; the provider passes its version accordingly.
* ``azure_images_ignore_client``: ``azure/`` image generation ignores ``client=``, so Azure images
  go through the OpenAI handler with an ``AzureOpenAI`` client (same deployment path).
* ``azure_client_fixes_api_version``: an ``AzureOpenAI`` client sends its own ``api-version``,
  whatever the call says; the plugin keeps one client per api-version.
* ``hosted_vllm_rerank_path``: ``hosted_vllm`` rerank posts to ``{api_base}/rerank``.
* ``anthropic_messages_path``: the Anthropic handlers post to ``{api_base}/v1/messages`` with
  ``anthropic-version`` and the key in ``x-api-key``; sync ``anthropic.messages.create`` is not
  implemented by LiteLLM.
* ``http_client_builders``: ``http_handler.get_ssl_configuration``, ``http2_enabled``,
  ``AsyncHTTPHandler.create_async_transport`` and ``create_httpx_proxy_mounts`` build the clients
  LiteLLM would use itself (its SSL settings, aiohttp transport, proxies).
* ``ssl_context_reaches_every_transport``: an ``ssl.SSLContext`` given as ``ssl_context`` to
  ``create_async_transport`` is the one the aiohttp connector handshakes with (and httpx's
  transport, when chosen); ``http_handler.get_ssl_verify`` resolves LiteLLM's verification setting
  (``SSL_VERIFY``, ``litellm.ssl_verify``, ``SSL_CERT_FILE``) to a bool or a CA bundle path. A
  client certificate needs a context of its own: the ones ``get_ssl_configuration`` returns are
  cached and shared by all of LiteLLM.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import certifi
import httpx
import litellm
from litellm.constants import openai_compatible_providers
from litellm.llms.azure.responses import transformation as azure_responses
from litellm.llms.custom_httpx import http_handler
from litellm.llms.custom_llm import CustomLLM
from litellm.llms.openai_like.json_loader import JSONProviderRegistry
from litellm.types.utils import LlmProvidersSet

from .config import _combined_error
from .errors import OAuth2ConfigurationError, OAuth2ValidationError

__all__ = [
    "ASYNC_ENDPOINTS",
    "RESPONSES_API_VERSION_READ",
    "SYNC_ENDPOINTS",
    "ClientCertificate",
    "async_http_client",
    "async_litellm_http_handler",
    "check_provider_names",
    "endpoint_of_call_type",
    "litellm_routed_names",
    "register_custom_providers",
    "sync_http_client",
    "sync_litellm_http_handler",
]

# The public LiteLLM functions the plugin routes, by the endpoint they serve.
SYNC_ENDPOINTS: Mapping[str, str] = {
    "completion": "completion",
    "embedding": "embedding",
    "responses": "responses",
    "get_responses": "get_responses",
    "delete_responses": "delete_responses",
    "text_completion": "text_completion",
    "image_generation": "image_generation",
    "transcription": "transcription",
    "speech": "speech",
    "moderation": "moderation",
    "rerank": "rerank",
}
ASYNC_ENDPOINTS: Mapping[str, str] = {
    "acompletion": "completion",
    "aembedding": "embedding",
    "aresponses": "responses",
    "aget_responses": "get_responses",
    "adelete_responses": "delete_responses",
    "atext_completion": "text_completion",
    "aimage_generation": "image_generation",
    "atranscription": "transcription",
    "aspeech": "speech",
    "amoderation": "moderation",
    "arerank": "rerank",
    "anthropic_messages": "anthropic_messages",
}

# Whether LiteLLM sends an Azure Responses call's ``responses_api_version`` as its api-version
# (1.109+: ``llms/azure/responses/transformation.py:_resolve_responses_api_version``); 1.108 knows
# no such argument and sends ``api_version``.
RESPONSES_API_VERSION_READ: bool = hasattr(azure_responses, "_resolve_responses_api_version")

# LiteLLM's own default for its HTTP clients; each call's ``timeout`` overrides it.
_DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
_DISPATCHED_BY_NAME = frozenset({"aleph_alpha", "palm"})


def litellm_routed_names() -> frozenset[str]:
    """Every provider prefix LiteLLM serves with its own handlers, read now (lists can grow)."""
    custom = set(litellm._custom_providers)
    names = set(LlmProvidersSet) | set(openai_compatible_providers) | _DISPATCHED_BY_NAME
    names.update(JSONProviderRegistry.list_providers())
    names.update(name for name in litellm.provider_list if name not in custom)
    return frozenset(names)


def check_provider_names(names: Iterable[str]) -> None:
    """Refuse provider names whose ``name/<model>`` calls LiteLLM would serve itself.

    Such a provider would never see its calls: they would leave without its token.

    Raises:
        OAuth2ValidationError: naming every such name (a key under ``oauth2_providers``).
    """
    routed = litellm_routed_names()
    problems: list[OAuth2ConfigurationError] = [
        OAuth2ValidationError(
            f"provider '{name}': the name '{name}' (its key under 'oauth2_providers') is LiteLLM's "
            f"built-in provider '{name}', whose '{name}/<model>' calls LiteLLM serves itself, without "
            f"the OAuth2 token; rename the key (e.g. '{name}_oauth2') and call '{name}_oauth2/<model>'",
            provider=name,
            field="oauth2_providers",
        )
        for name in names
        if name in routed
    ]
    if problems:
        raise _combined_error(problems, "oauth2_providers")


def register_custom_providers(handlers: Mapping[str, CustomLLM]) -> None:
    """Put ``handlers`` into ``litellm.custom_provider_map``, keeping the other entries."""
    kept = [entry for entry in litellm.custom_provider_map if entry.get("provider") not in handlers]
    litellm.custom_provider_map = kept + [
        {"provider": name, "custom_handler": handler} for name, handler in handlers.items()
    ]
    litellm.utils.custom_llm_setup()  # type: ignore[no-untyped-call]


def endpoint_of_call_type(call_type: object, kwargs: Mapping[str, Any]) -> str | None:
    """The endpoint an async deployment hook call is for, or None for one the plugin leaves alone."""
    name = getattr(call_type, "value", call_type)
    if name is None:  # LiteLLM 1.108 for aget_responses / adelete_responses
        name = getattr(kwargs.get("litellm_logging_obj"), "call_type", None)
        name = getattr(name, "value", name)
    return ASYNC_ENDPOINTS.get(name) if isinstance(name, str) else None


ClientCertificate = tuple[str, str, str | None]
"""Certificate file, key file and the key's password (None: unencrypted), presented to the gateway."""


def _ssl_configuration(
    verify: bool | str | None, certificate: ClientCertificate | None
) -> bool | str | ssl.SSLContext:
    """LiteLLM's SSL configuration; with a client certificate, a context of this client's own that
    verifies as LiteLLM would and presents the certificate.

    Raises:
        OSError: the certificate or key file cannot be loaded (``ssl.SSLError`` included).
    """
    if certificate is None:
        return http_handler.get_ssl_configuration(verify)
    resolved = http_handler.get_ssl_verify(verify)
    if resolved is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        cafile = resolved if isinstance(resolved, str) and os.path.exists(resolved) else certifi.where()
        context = ssl.create_default_context(cafile=cafile)
    certificate_file, key_file, password = certificate
    # b"" rather than None: OpenSSL would ask for a missing password on the terminal.
    context.load_cert_chain(certificate_file, key_file, (password or "").encode())
    return context


def sync_http_client(
    verify: bool | str | None,
    auth: httpx.Auth,
    follow_redirects: bool,
    certificate: ClientCertificate | None = None,
) -> httpx.Client:
    """The client LiteLLM builds for its own synchronous calls (``ssl_verify``, ``SSL_CERT_FILE``,
    ``SSL_VERIFY``, HTTP/2 switch), with ``auth``. ``verify`` None leaves it to LiteLLM's settings;
    ``certificate`` is presented in every TLS handshake (mutual TLS towards the gateway)."""
    return httpx.Client(
        verify=_ssl_configuration(verify, certificate),
        http2=http_handler.http2_enabled(),
        follow_redirects=follow_redirects,
        auth=auth,
        timeout=_DEFAULT_TIMEOUT,
    )


def async_http_client(
    verify: bool | str | None,
    auth: httpx.Auth,
    follow_redirects: bool,
    certificate: ClientCertificate | None = None,
) -> httpx.AsyncClient:
    """The client LiteLLM builds for its async calls: its aiohttp transport (unless
    ``disable_aiohttp_transport``, HTTP/2 or ``force_ipv4`` choose httpx's) with its SSL settings
    and proxy mounts, with ``auth``. The auth belongs to the httpx client, so it runs whichever
    transport sends the request; ``certificate`` goes into the SSL context either transport uses."""
    ssl_config = _ssl_configuration(verify, certificate)
    transport = http_handler.AsyncHTTPHandler.create_async_transport(
        ssl_context=ssl_config if isinstance(ssl_config, ssl.SSLContext) else None,
        ssl_verify=ssl_config if isinstance(ssl_config, bool) else None,
    )
    return httpx.AsyncClient(
        verify=ssl_config,
        transport=transport,
        mounts=http_handler.AsyncHTTPHandler.create_httpx_proxy_mounts(
            transport, verify=ssl_config, cert=None
        ),
        http2=http_handler.http2_enabled(),
        follow_redirects=follow_redirects,
        auth=auth,
        timeout=_DEFAULT_TIMEOUT,
    )


def sync_litellm_http_handler(client: httpx.Client) -> http_handler.HTTPHandler:
    """LiteLLM's sync HTTP handler sending through ``client``."""
    return http_handler.HTTPHandler(client=client)


def async_litellm_http_handler(client: httpx.AsyncClient) -> http_handler.AsyncHTTPHandler:
    """LiteLLM's async HTTP handler sending through ``client`` (it builds one of its own first,
    never used, then takes ``client`` through its public setter)."""
    handler = http_handler.AsyncHTTPHandler()
    handler.client = client
    return handler
