"""Where a call for ``name/<model>`` meets the plugin before LiteLLM routes it.

LiteLLM has no registration point that reaches every endpoint (``CustomLLM`` serves chat,
embeddings and images only; responses, text completions and the Anthropic Messages API would be
bridged to chat; transcription, speech and rerank refuse an unknown prefix), and no synchronous
hook that can change a request. So each routed LiteLLM function is wrapped:
``litellm.<endpoint>`` and ``litellm.a<endpoint>`` (the SDK, and the Router and the proxy, which
look them up at call time) and ``litellm.anthropic.messages.acreate``. A wrapper finds the provider
from the ``model`` prefix (or ``custom_llm_provider`` for stored responses), routes the call
(an endpoint the provider's style cannot serve raises before the token is asked for), gets the
token before any request (a failure raises ``OAuth2ProviderError`` with nothing sent), and calls
the original with the routed kwargs. Calls for any other model pass through untouched; a routed
call names a built-in provider, so routing is never applied twice.

An async call whose function was bound before the wrappers were installed still runs LiteLLM's
``async_pre_call_deployment_hook``: ``OAuth2Handler`` routes it there (``route_in_hook``).
"""

from __future__ import annotations

import collections
import functools
import inspect
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import litellm
from litellm import anthropic_interface

from . import _compat
from .provider import MisconfiguredProvider, OAuth2Provider

__all__ = ["install", "provider_for", "register", "route_in_hook"]

# Providers by name, as the process's handlers registered them (a misconfigured name stands in).
_providers: dict[str, OAuth2Provider | MisconfiguredProvider] = {}
# Which provider created the latest response ids, so that get_responses / delete_responses find
# it without custom_llm_provider (LiteLLM would decode the id to 'openai' and call OpenAI itself).
_response_owners: collections.OrderedDict[str, str] = collections.OrderedDict()
_RESPONSE_OWNERS_KEPT = 10_000
_install_lock = threading.Lock()
_WRAPPED = "__litellm_oauth2_wrapped__"


def register(providers: Mapping[str, OAuth2Provider | MisconfiguredProvider]) -> None:
    """Make the wrappers route ``providers``' calls and LiteLLM know their prefixes."""
    _providers.update(providers)
    _compat.register_custom_providers(providers)
    install()


def provider_for(call: Mapping[str, Any]) -> OAuth2Provider | MisconfiguredProvider | None:
    """The registered provider a call's kwargs address, if any."""
    model = call.get("model")
    if isinstance(model, str) and "/" in model:
        found = _providers.get(model.split("/", 1)[0])
        if found is not None:
            return found
    named = call.get("custom_llm_provider")
    if isinstance(named, str):
        return _providers.get(named)
    response_id = call.get("response_id")
    owner = _response_owners.get(response_id) if isinstance(response_id, str) else None
    return _providers.get(owner) if owner is not None else None


async def route_in_hook(kwargs: dict[str, Any], call_type: object) -> dict[str, Any] | None:
    """The routed kwargs of an async call no wrapper saw, or None to leave it to LiteLLM."""
    endpoint = _compat.endpoint_of_call_type(call_type, kwargs)
    provider = provider_for(kwargs) if endpoint is not None else None
    if endpoint is None or provider is None:
        return None
    if isinstance(provider, MisconfiguredProvider):
        raise provider.fail(kwargs.get("model"))
    routed = provider.route(endpoint, kwargs, is_async=True)  # an endpoint it cannot serve: no token asked
    await provider.aauthorize(kwargs.get("model"))
    return routed


def install() -> None:
    """Wrap LiteLLM's routed functions, once per process (a wrapper is never wrapped again)."""
    with _install_lock:
        for name, endpoint in _compat.SYNC_ENDPOINTS.items():
            _wrap(litellm, name, endpoint, is_async=False)
        for name, endpoint in _compat.ASYNC_ENDPOINTS.items():
            _wrap(litellm, name, endpoint, is_async=True)
        _wrap(anthropic_interface.messages, "acreate", "anthropic_messages", is_async=True)


def _wrap(namespace: Any, name: str, endpoint: str, *, is_async: bool) -> None:
    original = getattr(namespace, name, None)
    if original is None or getattr(original, _WRAPPED, False):
        return
    bind = _binder(namespace, name)
    if is_async:

        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            routed = _RoutedCall.of(endpoint, bind(args, kwargs), is_async=True)
            if routed is None:
                return await original(*args, **kwargs)
            await routed.provider.aauthorize(routed.model)
            started = time.monotonic()
            try:
                return routed.done(await original(**routed.kwargs))
            except Exception as exc:
                routed.reraise(exc, started)

    else:

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            routed = _RoutedCall.of(endpoint, bind(args, kwargs), is_async=False)
            if routed is None:
                return original(*args, **kwargs)
            routed.provider.authorize(routed.model)
            started = time.monotonic()
            try:
                return routed.done(original(**routed.kwargs))
            except Exception as exc:
                routed.reraise(exc, started)

    setattr(wrapper, _WRAPPED, True)
    setattr(namespace, name, wrapper)


@dataclass(frozen=True, slots=True)
class _RoutedCall:
    """One call a wrapper routes: its provider and the kwargs LiteLLM gets instead of the caller's."""

    endpoint: str
    provider: OAuth2Provider
    model: object
    kwargs: dict[str, Any]

    @classmethod
    def of(cls, endpoint: str, call: dict[str, Any] | None, *, is_async: bool) -> _RoutedCall | None:
        """The routed call, or None for a call of no registered provider (it passes through).

        Raises:
            OAuth2ProviderError: the provider's configuration failed to load, or its style cannot
            serve ``endpoint``; nothing was sent, no token asked for.
        """
        provider = provider_for(call) if call is not None else None
        if provider is None or call is None:
            return None
        if isinstance(provider, MisconfiguredProvider):
            raise provider.fail(call.get("model"))
        return cls(endpoint, provider, call.get("model"), provider.route(endpoint, call, is_async=is_async))

    def done(self, result: Any) -> Any:
        """``result``, after noting which provider created it when it is a stored response."""
        response_id = getattr(result, "id", None) if self.endpoint == "responses" else None
        if isinstance(response_id, str):
            _response_owners[response_id] = self.provider.name
            while len(_response_owners) > _RESPONSE_OWNERS_KEPT:
                _response_owners.popitem(last=False)
        return result

    def reraise(self, exc: Exception, started: float) -> NoReturn:
        """Raise what the caller should see for ``exc`` (``OAuth2Provider.failure_of``)."""
        failure = self.provider.failure_of(exc, started)
        if failure is exc:
            raise exc
        raise failure from exc


def _binder(namespace: Any, name: str) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any] | None]:
    """Turns a call's arguments into keywords, by the function's signature (an async function
    declared as ``(*args, **kwargs)`` is bound by its sync twin's). None: they do not bind."""
    function = getattr(namespace, name)
    signature = inspect.signature(function)
    if _only_varargs(signature) and name.startswith("a") and hasattr(namespace, name[1:]):
        signature = inspect.signature(getattr(namespace, name[1:]))
    parameters = signature.parameters.values()
    keywords_rest = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    # Arguments that would land in ``*args`` have no name to route by: such a call passes through.
    positional_rest = [p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL]

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        if not args:
            return dict(kwargs)
        try:
            bound = signature.bind_partial(*args, **kwargs)
        except TypeError:
            return None
        call = dict(bound.arguments)
        if any(name in call for name in positional_rest):
            return None
        for name in keywords_rest:
            call.update(call.pop(name, {}))
        return call

    return bind


def _only_varargs(signature: inspect.Signature) -> bool:
    kinds = {parameter.kind for parameter in signature.parameters.values()}
    return kinds <= {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}
