"""OAuth2 client-credentials authentication for LiteLLM providers.

Names are loaded on first use (PEP 562), so that importing ``litellm_oauth2.autoload`` at
interpreter start costs next to nothing, and the core (``config``, ``client``, ``cache``,
``errors``) never imports LiteLLM; only ``OAuth2Handler`` and ``enable`` do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cache import TokenCache, TokenStore
    from .client import Token, TokenClient
    from .config import OAuth2Config, ProviderSettings, load_config
    from .errors import (
        OAuth2AuthenticationError,
        OAuth2ConfigurationError,
        OAuth2Error,
        OAuth2ValidationError,
    )
    from .handler import OAuth2Handler, enable
    from .provider import (
        OAuth2ClientRejectedError,
        OAuth2ProviderError,
        OAuth2TokenUnavailableError,
        find_oauth2_error,
    )

    proxy_handler: OAuth2Handler

__version__ = "0.1.0"

_EXPORTS = {
    "OAuth2AuthenticationError": "errors",
    "OAuth2ConfigurationError": "errors",
    "OAuth2Error": "errors",
    "OAuth2ValidationError": "errors",
    "OAuth2Config": "config",
    "ProviderSettings": "config",
    "load_config": "config",
    "Token": "client",
    "TokenClient": "client",
    "TokenCache": "cache",
    "TokenStore": "cache",
    "OAuth2Handler": "handler",
    "OAuth2ProviderError": "provider",
    "OAuth2ClientRejectedError": "provider",
    "OAuth2TokenUnavailableError": "provider",
    "enable": "handler",
    "find_oauth2_error": "provider",
}

__all__ = [
    "OAuth2AuthenticationError",
    "OAuth2ClientRejectedError",
    "OAuth2Config",
    "OAuth2ConfigurationError",
    "OAuth2Error",
    "OAuth2Handler",
    "OAuth2ProviderError",
    "OAuth2TokenUnavailableError",
    "OAuth2ValidationError",
    "ProviderSettings",
    "Token",
    "TokenCache",
    "TokenClient",
    "TokenStore",
    "__version__",
    "enable",
    "find_oauth2_error",
    "load_config",
    "proxy_handler",
]


def __getattr__(name: str) -> Any:
    if name == "proxy_handler":
        # The LiteLLM proxy's `callbacks: ["litellm_oauth2.proxy_handler"]` reads this attribute:
        # the process-wide handler, built on first use from $LITELLM_OAUTH2_CONFIG.
        from .handler import enable

        return enable()
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'litellm_oauth2' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
