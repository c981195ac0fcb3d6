"""The plugin's LiteLLM callback and its switch: ``OAuth2Handler`` and ``enable()``.

Constructing a handler loads the configuration, builds one ``OAuth2Provider`` per configured
provider and registers them (``_doors.register``): LiteLLM knows their prefixes and the plugin's
wrappers route their calls, on every endpoint, through the SDK, the Router and the proxy.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import litellm
from litellm.integrations.custom_logger import CustomLogger

from . import _doors
from ._compat import check_provider_names, litellm_routed_names
from ._service_logging import attach_service_logging
from .cache import TokenCache
from .config import OAuth2Config, load_config
from .errors import OAuth2ConfigurationError
from .exporters import export_metrics
from .metrics import ProviderHealth, ProviderStats
from .provider import MisconfiguredProvider, OAuth2Provider

__all__ = ["OAuth2Handler", "enable"]

logger = logging.getLogger("litellm_oauth2")


class OAuth2Handler(CustomLogger):
    """Gives every call for a configured provider an OAuth2 bearer token.

    Constructing it registers the providers with LiteLLM; ``enable()`` also adds it to
    ``litellm.callbacks`` once per process. In the proxy, its pre-call hook re-registers the
    providers if the proxy's own config replaced ``litellm.custom_provider_map``, and its
    deployment hook routes async calls whose LiteLLM function was bound before the plugin's
    wrappers were installed.
    """

    def __init__(self, config_path: str | Path | None = None, *, config: OAuth2Config | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else load_config(config_path)
        check_provider_names(self.config.oauth2_providers)
        missing_base = [
            name for name, settings in self.config.oauth2_providers.items() if not settings.api_base
        ]
        if missing_base:
            raise OAuth2ConfigurationError(
                f"provider '{missing_base[0]}': field 'api_base' is required to route "
                f"'{missing_base[0]}/<model>' calls; set it to the gateway's base URL",
                provider=missing_base[0],
                field="api_base",
            )
        self.cache = TokenCache(self.config)
        export_metrics(self.cache, self.config.metrics)
        if self.config.metrics.litellm_service_logging:
            attach_service_logging(self.cache)
        self.providers = {
            name: OAuth2Provider(settings, self.cache)
            for name, settings in self.config.oauth2_providers.items()
        }
        self.register()

    def __repr__(self) -> str:
        return f"OAuth2Handler(providers={sorted(self.providers)!r})"

    def register(self) -> None:
        """Route this handler's providers, keeping LiteLLM's other custom providers."""
        _doors.register(self.providers)

    def ensure_registered(self) -> None:
        present = {
            entry.get("provider"): entry.get("custom_handler") for entry in litellm.custom_provider_map
        }
        if any(present.get(name) is not provider for name, provider in self.providers.items()):
            logger.info(
                "litellm custom_provider_map was replaced; registering OAuth2 providers again",
                extra={"provider": None, "event": "providers_registered_again"},
            )
            self.register()

    def get_token(self, name: str) -> str:
        """The current access token of provider ``name``, for callers that need it raw."""
        return self.cache.get_token(name)

    async def aget_token(self, name: str) -> str:
        return await self.cache.aget_token(name)

    def stats(self) -> dict[str, ProviderStats]:
        """Per-provider token counters (``TokenCache.stats``): requests by outcome, latency, waits."""
        return self.cache.stats()

    def health(self) -> dict[str, ProviderHealth]:
        """Per provider: whether a usable token is held and for how long (``TokenCache.health``)."""
        return self.cache.health()

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> None:
        self.ensure_registered()

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        return await _doors.route_in_hook(kwargs, call_type)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()
        self.cache.close()


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


def register_broken_config(error: OAuth2ConfigurationError, names: list[str]) -> None:
    """After a failed activation, make calls to the providers ``names`` fail with ``error``.

    Names LiteLLM serves itself are left alone: a stand-in could never receive their calls.
    """
    routed = litellm_routed_names()
    usable = [name for name in names if name not in routed]
    if usable:
        stand_in = MisconfiguredProvider(error)
        _doors.register({name: stand_in for name in usable})
