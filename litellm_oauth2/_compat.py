"""The LiteLLM internals this package relies on, and the facts about them it assumes.

Only LiteLLM-facing code imports this module (it imports LiteLLM); importing it changes
nothing. Each fact below, read off litellm 1.110.2, has a test in ``tests/test_compat.py``
named after it, so an upgrade that breaks one fails a test that says which.

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
"""

from __future__ import annotations

from collections.abc import Iterable

import litellm
from litellm.constants import openai_compatible_providers
from litellm.llms.openai_like.json_loader import JSONProviderRegistry
from litellm.types.utils import LlmProvidersSet

from .config import _combined_error
from .errors import OAuth2ConfigurationError, OAuth2ValidationError

__all__ = ["check_provider_names", "litellm_routed_names"]

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
