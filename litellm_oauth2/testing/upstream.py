"""An OpenAI-compatible fake LLM gateway on loopback that only answers valid bearer tokens."""

from __future__ import annotations

from ._gateway import Claims
from ._http import RecordedRequest, Response, json_response
from ._openai_api import MODEL_ID, OpenAIDialect, openai_error

__all__ = ["MODEL_ID", "OpenAIUpstream"]


class OpenAIUpstream(OpenAIDialect):
    """An OpenAI-compatible gateway at ``base_url`` (``<url>/v1``); point ``api_base`` there.

    Serves, under ``/v1``: ``POST chat/completions`` and ``completions`` (JSON, or SSE with
    ``"stream": true``), ``embeddings``, ``responses`` (JSON or SSE; kept for ``GET``/``DELETE
    responses/{id}`` unless ``"store": false``), ``images/generations``, ``audio/transcriptions``
    (multipart), ``audio/speech``, ``moderations``, ``rerank`` (vLLM/Cohere shape) and
    ``GET models``. Text answers read ``Hello from upstream (client_id=<sub>)``.

    Accepts ``Authorization: Bearer <jwt>`` issued by ``token_server`` (checked against its JWKS
    fetched over HTTP, or its ``shared_key`` for HS256, plus its revocation list) and, if set,
    ``Bearer <static_api_key>``; see ``BearerGateway`` for counters, ``recorded`` and ``fail_next``::

        with TokenServer() as idp, OpenAIUpstream(idp, static_api_key="sk-static") as gateway:
            litellm.completion(model="openai/test-model", api_base=gateway.base_url,
                               api_key="sk-static", messages=[{"role": "user", "content": "hi"}])
            assert gateway.last_request.route == "/v1/chat/completions"
    """

    @property
    def base_url(self) -> str:
        """What clients use as ``api_base``."""
        return self.url + "/v1"

    def _route(self, request: RecordedRequest, claims: Claims) -> Response:
        route = request.route.rstrip("/")
        if not route.startswith("/v1/"):
            return openai_error(404, f"no route for {request.method} {request.path}", "not_found")
        endpoint = route.removeprefix("/v1/")
        if (request.method, endpoint) == ("GET", "models"):
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "litellm-oauth2"}
            return json_response(200, {"object": "list", "data": [model]})
        return self._serve(request.method, endpoint, request, claims, MODEL_ID)
