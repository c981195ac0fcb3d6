"""Which LiteLLM provider serves each endpoint of a gateway, per ``api_style``.

A gateway speaks one dialect: ``openai`` (an OpenAI-compatible base such as ``https://gw/v1``),
``azure`` (an Azure OpenAI resource or its API Management front: deployment paths with
``api-version``, or the ``/openai/v1`` path style when ``api_version`` is ``v1``) or ``anthropic``
(the Messages API at ``{api_base}/v1/messages``). ``target`` answers, for one call, which of
LiteLLM's built-in providers to hand it to, at which base URL, and with which kind of client
(LiteLLM honours only one kind per endpoint). Pure: no LiteLLM import, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .config import ProviderSettings
from .errors import OAuth2ConfigurationError

__all__ = ["ENDPOINTS", "Target", "served_endpoints", "target"]

ClientKind = Literal["openai", "azure", "http"]

# Every endpoint the plugin routes, in the order the README lists them.
ENDPOINTS = (
    "completion",
    "embedding",
    "responses",
    "get_responses",
    "delete_responses",
    "text_completion",
    "image_generation",
    "transcription",
    "speech",
    "moderation",
    "rerank",
    "anthropic_messages",
)

_OPENAI = frozenset(ENDPOINTS) - {"anthropic_messages"}
_AZURE = _OPENAI - {"moderation", "rerank"}
_ANTHROPIC = frozenset({"completion", "anthropic_messages"})
# Endpoints LiteLLM serves only with its own HTTP handler (an openai SDK client would be ignored).
_HTTP_HANDLER_ENDPOINTS = frozenset({"responses", "get_responses", "delete_responses", "rerank"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where one call goes: LiteLLM's ``provider`` at ``api_base`` with a ``client_kind`` client;
    ``api_version`` is set for Azure deployment paths (and selects the client)."""

    provider: str
    api_base: str
    client_kind: ClientKind
    api_version: str | None = None


def served_endpoints(settings: ProviderSettings) -> frozenset[str]:
    """The endpoints a provider's ``api_style`` can serve."""
    return {"openai": _OPENAI, "azure": _AZURE, "anthropic": _ANTHROPIC}[settings.api_style]


def target(settings: ProviderSettings, endpoint: str, api_version: str | None = None) -> Target:
    """Where ``endpoint`` goes for this provider; ``api_version`` is the call's own (Azure).

    Raises:
        OAuth2ConfigurationError: the provider's style cannot serve ``endpoint`` (no request sent).
    """
    if endpoint not in served_endpoints(settings):
        raise OAuth2ConfigurationError(
            f"provider '{settings.provider_name}' (api_style '{settings.api_style}') cannot serve "
            f"{endpoint}: it serves {', '.join(e for e in ENDPOINTS if e in served_endpoints(settings))}",
            provider=settings.provider_name,
            field="api_style",
        )
    base = (settings.api_base or "").rstrip("/")
    if settings.api_style == "anthropic":
        return Target("anthropic", base, "http")
    if settings.api_style == "azure":
        version = api_version or settings.azure_api_version
        if version != "v1":
            return _azure_deployment(endpoint, base, version)
        base += "/openai/v1"
    if endpoint == "rerank":
        return Target("hosted_vllm", base, "http")
    return Target("openai", base, "http" if endpoint in _HTTP_HANDLER_ENDPOINTS else "openai")


def _azure_deployment(endpoint: str, base: str, version: str) -> Target:
    """Azure's ``/openai/deployments/{model}/...?api-version=`` paths (responses: LiteLLM's choice)."""
    if endpoint in _HTTP_HANDLER_ENDPOINTS:
        return Target("azure", base, "http", version)
    if endpoint == "image_generation":
        # LiteLLM's azure/ image handler ignores client=; its OpenAI handler with an AzureOpenAI
        # client reaches the same deployment path with the bearer token.
        return Target("openai", base, "azure", version)
    if endpoint == "text_completion":
        return Target("azure_text", base, "azure", version)
    return Target("azure", base, "azure", version)
