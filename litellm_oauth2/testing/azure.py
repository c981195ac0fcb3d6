"""An Azure OpenAI fake resource on loopback: Azure's URL layout and api-version check, OpenAI's bodies."""

from __future__ import annotations

from collections.abc import Iterable

from ._gateway import Claims
from ._http import RecordedRequest, Response, json_response
from ._openai_api import MODEL_ID, OpenAIDialect
from .token_server import TokenServer

__all__ = ["AZURE_API_VERSIONS", "AzureOpenAIUpstream"]

AZURE_API_VERSIONS = frozenset(
    {
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2025-06-01",
        "2024-02-15-preview",
        "2024-05-01-preview",
        "2024-08-01-preview",
        "2024-10-01-preview",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
        "preview",
        "latest",
    }
)
"""GA and preview data-plane versions accepted by default (incl. LiteLLM's defaults)."""

_DEPLOYMENT_ENDPOINTS = frozenset(
    {
        "chat/completions",
        "completions",
        "embeddings",
        "images/generations",
        "audio/transcriptions",
        "audio/speech",
    }
)


def _azure_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, {"error": {"code": code, "message": message}}, headers)


class AzureOpenAIUpstream(OpenAIDialect):
    """An Azure OpenAI resource at ``base_url`` (the resource root users put as ``api_base``).

    Serves ``/openai/deployments/{deployment}/`` + ``chat/completions``, ``completions``,
    ``embeddings``, ``images/generations``, ``audio/transcriptions``, ``audio/speech``, each with a
    required ``?api-version=`` (one of ``api_versions``; Azure's 400 ``BadRequest`` otherwise);
    ``/openai/responses[/{id}]?api-version=`` (older LiteLLM's Responses path); and the v1 layout
    ``/openai/v1/`` + those endpoints, ``responses`` and ``responses/{id}``, where the version is
    optional. A deployment request needs no ``model`` in its body: the deployment is the model,
    and ``deployments`` lists the ones addressed. Bodies are OpenAI's (see ``OpenAIUpstream``).

    The bearer check is ``BearerGateway``'s: an Entra-style token from ``token_server``, or
    ``static_api_key`` (what ``azure_ad_token=`` sends as ``Authorization: Bearer``); an ``api-key``
    header is recorded but never accepted::

        with AzureOpenAIUpstream(static_api_key="sk-static") as resource:
            litellm.completion(model="azure/dep1", api_base=resource.base_url, api_version="2024-10-21",
                               azure_ad_token="sk-static", messages=[{"role": "user", "content": "hi"}])
            assert resource.deployments == ["dep1"] and resource.last_request.api_version == "2024-10-21"
    """

    def __init__(
        self,
        token_server: TokenServer | None = None,
        *,
        required_audience: str | None = None,
        static_api_key: str | None = None,
        api_versions: Iterable[str] = AZURE_API_VERSIONS,
    ) -> None:
        super().__init__(token_server, required_audience=required_audience, static_api_key=static_api_key)
        self.api_versions = frozenset(api_versions)

    @property
    def base_url(self) -> str:
        """The resource root: what users put as ``api_base`` / ``azure_endpoint``."""
        return self.url

    @property
    def deployments(self) -> list[str]:
        """The deployment named by each recorded ``/openai/deployments/{deployment}/...`` request, in order."""
        return [name for name in map(_deployment_of, self.recorded) if name is not None]

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
        return _azure_error(status, message, code, headers)

    def _route(self, request: RecordedRequest, claims: Claims) -> Response:
        route = request.route.rstrip("/")
        deployment = _deployment_of(request)
        if deployment is not None:
            endpoint = route.split("/", 4)[4]
            if endpoint not in _DEPLOYMENT_ENDPOINTS:
                return self._not_found(request)
            return self._versioned(request, claims, endpoint, deployment, required=True)
        if route.startswith("/openai/v1/"):
            return self._versioned(
                request, claims, route.removeprefix("/openai/v1/"), MODEL_ID, required=False
            )
        if route == "/openai/responses" or route.startswith("/openai/responses/"):
            return self._versioned(request, claims, route.removeprefix("/openai/"), MODEL_ID, required=True)
        return self._not_found(request)

    def _versioned(
        self, request: RecordedRequest, claims: Claims, endpoint: str, model: str, *, required: bool
    ) -> Response:
        version = request.api_version
        if version is None and required:
            return _azure_error(400, "Missing required query parameter: api-version", "BadRequest")
        if version is not None and version not in self.api_versions:
            return _azure_error(400, f"API version not supported: {version}", "BadRequest")
        return self._serve(request.method, endpoint, request, claims, model)

    def _not_found(self, request: RecordedRequest) -> Response:
        return _azure_error(404, f"no route for {request.method} {request.route}", "not_found")


def _deployment_of(request: RecordedRequest) -> str | None:
    parts = request.route.split("/")
    if len(parts) > 4 and parts[1:3] == ["openai", "deployments"] and parts[3]:
        return parts[3]
    return None
