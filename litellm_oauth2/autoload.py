"""Switch the plugin on in an unchanged application, from the environment alone.

``litellm_oauth2_autoload.pth`` imports this module at interpreter start only when
``LITELLM_OAUTH2_CONFIG`` is set. It never imports LiteLLM: it puts a one-shot finder on
``sys.meta_path`` that, once ``import litellm`` has finished, registers the handler with
``litellm_oauth2.enable()``. ``LITELLM_OAUTH2_DISABLE=1`` turns it off.

A broken configuration must not break unrelated imports: the error is logged when LiteLLM
is imported and raised at the first call for one of the configured providers.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

CONFIG_ENV_VAR = "LITELLM_OAUTH2_CONFIG"
DISABLE_ENV_VAR = "LITELLM_OAUTH2_DISABLE"

logger = logging.getLogger("litellm_oauth2")


def is_disabled() -> bool:
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def install() -> None:
    """Arrange for the handler to be registered right after LiteLLM is imported."""
    if not os.environ.get(CONFIG_ENV_VAR) or is_disabled():
        return
    if "litellm" in sys.modules:
        activate()
    elif not any(isinstance(finder, _AfterLiteLLMImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterLiteLLMImport())


_pending = False


def activate() -> None:
    """Register the handler from ``$LITELLM_OAUTH2_CONFIG``; a bad config is logged, then raised per call."""
    global _pending
    hook = sys.modules.get(f"{__package__}.hook")
    if hook is not None and getattr(getattr(hook, "__spec__", None), "_initializing", False):
        # LiteLLM was imported by litellm_oauth2.hook itself: its names are not defined yet, so
        # the hook module calls activate_pending() at its end.
        _pending = True
        return
    _enable_or_register_broken()


def activate_pending() -> None:
    """Run an activation that ``activate`` deferred while ``litellm_oauth2.hook`` was loading."""
    global _pending
    if _pending:
        _pending = False
        _enable_or_register_broken()


def _enable_or_register_broken() -> None:
    from .errors import OAuth2ConfigurationError
    from .hook import enable, register_broken_config

    try:
        enable()
    except OAuth2ConfigurationError as exc:
        logger.error("litellm-oauth2 not enabled: %s", exc)
        register_broken_config(exc)


class _AfterLiteLLMImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps LiteLLM's own loader so ``activate`` runs after its module body."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "litellm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_activate(module: ModuleType) -> None:
            exec_module(module)
            activate()

        loader.exec_module = exec_then_activate  # type: ignore[method-assign]
        return spec
