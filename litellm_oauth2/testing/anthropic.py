"""An Anthropic Messages API fake gateway on loopback that only answers valid bearer tokens."""

from __future__ import annotations

import uuid
from typing import Any

from ._gateway import BearerGateway, Claims
from ._http import RecordedRequest, Response, json_response
from ._openai_api import sse_data

__all__ = ["ANTHROPIC_MODEL_ID", "AnthropicUpstream"]

ANTHROPIC_MODEL_ID = "claude-test"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return json_response(status, {"type": "error", "error": {"type": kind, "message": message}}, headers)


def _text_tokens(messages: list[Any]) -> int:
    """Whitespace-separated words of the messages' text, Anthropic's content blocks included."""
    words = 0
    for message in messages:
        content = message.get("content", "") if isinstance(message, dict) else ""
        blocks = content if isinstance(content, list) else [{"text": content}]
        words += sum(len(str(block.get("text", "")).split()) for block in blocks if isinstance(block, dict))
    return words


class AnthropicUpstream(BearerGateway):
    """An Anthropic-compatible gateway at ``base_url`` (``url``; LiteLLM appends ``/v1/messages``).

    Serves ``POST /v1/messages``: requires an ``anthropic-version`` header, ``messages`` and
    ``max_tokens`` (Anthropic's 400 ``invalid_request_error`` otherwise) and answers a Messages
    JSON whose text reads ``Hello from upstream (client_id=<sub>)``, or with ``"stream": true``
    Anthropic's SSE stream (``message_start``, ``content_block_start``, ``ping``,
    ``content_block_delta`` (``text_delta``)..., ``content_block_stop``, ``message_delta``,
    ``message_stop``, each with its ``event:`` line). Errors, a refused token's 401
    (``authentication_error``) included, are in Anthropic's shape.

    The credential is ``Authorization: Bearer`` as for every ``BearerGateway`` (a gateway in front
    of Anthropic, not Anthropic itself); ``x-api-key`` is recorded but never accepted::

        with AnthropicUpstream(static_api_key="sk-static") as gateway:
            litellm.completion(model="anthropic/claude-x", api_base=gateway.base_url, api_key="unused",
                               extra_headers={"Authorization": "Bearer sk-static"},
                               messages=[{"role": "user", "content": "hi"}])
            assert gateway.last_request.headers["anthropic-version"]
    """

    @property
    def base_url(self) -> str:
        """What clients use as ``api_base``."""
        return self.url

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
        return anthropic_error(status, message, headers)

    def _route(self, request: RecordedRequest, claims: Claims) -> Response:
        if (request.method, request.route.rstrip("/")) != ("POST", "/v1/messages"):
            return anthropic_error(404, f"no route for {request.method} {request.route}")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "anthropic-version: header is required")
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return anthropic_error(400, "messages: field required")
        if not isinstance(body.get("max_tokens"), int):
            return anthropic_error(400, "max_tokens: field required")
        text = f"Hello from upstream (client_id={claims.get('sub')})"
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or ANTHROPIC_MODEL_ID),
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": _text_tokens(body["messages"]), "output_tokens": len(text.split())},
        }
        if not body.get("stream"):
            return json_response(200, message)
        return Response(
            200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
            chunks=_message_events(message, text),
        )


def _message_events(message: dict[str, Any], text: str) -> list[bytes]:
    """Anthropic's stream for a one-text-block message, with ``event:`` lines as Anthropic sends them."""
    usage = message["usage"]
    started = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
    }
    third = len(text) // 3
    pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
    payloads: list[dict[str, Any]] = [
        {"type": "message_start", "message": started},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
    ]
    payloads += [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
        for piece in pieces
    ]
    payloads += [
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
        {"type": "message_stop"},
    ]
    return [sse_data(payload, payload["type"]) for payload in payloads]
