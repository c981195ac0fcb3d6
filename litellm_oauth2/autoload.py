"""Switch the plugin on in an unchanged application, from the environment alone.

``litellm_oauth2_autoload.pth`` imports this module at interpreter start only when
``LITELLM_OAUTH2_CONFIG`` is set. It never imports LiteLLM: it puts a one-shot finder on
``sys.meta_path`` that, once ``import litellm`` has finished, registers the handler with
``litellm_oauth2.enable()``. ``LITELLM_OAUTH2_DISABLE=1`` turns off this activation only: an explicit
``litellm_oauth2.enable()`` and the proxy's ``callbacks`` line still work.

The plugin's LiteLLM-facing modules import LiteLLM themselves (``litellm_oauth2.enable()`` before
any ``import litellm``); activating from inside that import would need their names before they
exist. So the finder also wraps those modules' loaders and, when LiteLLM arrives while one of
them is loading, activates once the last of them is complete. Nothing imports this module back.

A broken configuration must not break unrelated imports: the file is read once, bounded, and
only if it is a regular file (a FIFO would block, ``/dev/zero`` never ends); the error is logged
when LiteLLM is imported and raised at each call for every provider the file names.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from ._environment import CONFIG_ENV_VAR, DISABLE_ENV_VAR

__all__ = [
    "activate",
    "install",
    "is_disabled",
]

logger = logging.getLogger("litellm_oauth2")

_LITELLM = "litellm"
# The modules that import LiteLLM (activation uses them all).
_LITELLM_FACING = frozenset(f"{__package__}.{name}" for name in ("handler", "provider", "_doors", "_compat"))


def is_disabled() -> bool:
    return os.environ.get(DISABLE_ENV_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def install() -> None:
    """Arrange for the handler to be registered right after LiteLLM is imported."""
    if not os.environ.get(CONFIG_ENV_VAR) or is_disabled():
        return
    if _LITELLM in sys.modules:
        activate()
    elif not any(isinstance(finder, _AfterLiteLLMImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterLiteLLMImport())


def activate() -> None:
    """Register the handler from ``$LITELLM_OAUTH2_CONFIG``; a bad config is logged, then raised per call."""
    from .config import OAuth2Config, config_path, read_document
    from .errors import OAuth2ConfigurationError
    from .handler import enable, register_broken_config

    path = config_path()
    document: object = None
    try:
        document = read_document(path)
        enable(config=OAuth2Config.from_dict(document, source=str(path)))
    except OAuth2ConfigurationError as exc:
        logger.error(
            "litellm-oauth2 not enabled: %s",
            exc,
            extra={"provider": exc.provider, "event": "activation_failed"},
        )
        register_broken_config(exc, _provider_names(document))


def _provider_names(document: object) -> list[str]:
    """The provider names a parsed (possibly invalid) document declares; none if it has no such map."""
    providers = document.get("oauth2_providers") if isinstance(document, dict) else None
    if not isinstance(providers, dict):
        return []
    return [name for name in providers if isinstance(name, str) and name and "/" not in name]


class _AfterLiteLLMImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loaders of LiteLLM and of the plugin's LiteLLM-facing modules
    so ``activate`` runs once LiteLLM is imported and those modules, if loading, are complete."""

    def __init__(self) -> None:
        self._facing_loading = 0
        self._pending = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _LITELLM and fullname not in _LITELLM_FACING:
            return None
        spec = self._spec_from_the_other_finders(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module: Callable[[ModuleType], None] = spec.loader.exec_module
        after = self._after_litellm if fullname == _LITELLM else self._after_facing

        def exec_then_activate(module: ModuleType) -> None:
            if fullname in _LITELLM_FACING:
                self._facing_loading += 1
                try:
                    exec_module(module)
                finally:
                    self._facing_loading -= 1
            else:
                exec_module(module)
            after()

        spec.loader.exec_module = exec_then_activate  # type: ignore[method-assign]
        return spec

    def _spec_from_the_other_finders(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None
    ) -> importlib.machinery.ModuleSpec | None:
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def _after_litellm(self) -> None:
        if self._facing_loading:
            self._pending = True  # a LiteLLM-facing module is still defining its names
        else:
            self._activate_once()

    def _after_facing(self) -> None:
        if self._pending and not self._facing_loading:
            self._activate_once()

    def _activate_once(self) -> None:
        self._pending = False
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        activate()
