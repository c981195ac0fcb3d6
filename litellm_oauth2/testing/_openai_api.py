"""The OpenAI API's bodies, shared by the OpenAI and Azure OpenAI gateways.

Answers are deterministic and small but shaped as OpenAI sends them (field names, SSE framing,
event order), so real clients (the ``openai`` SDK, LiteLLM) parse them unchanged. Every text
answer names the caller (``client_id=<sub>``) so a test sees whose token the gateway accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

from ._gateway import BearerGateway, Claims
from ._http import RecordedRequest, Response, json_response
from .token_server import TokenServer

__all__ = ["FLAGGED_WORD", "MODEL_ID", "OpenAIDialect", "openai_error", "speech_bytes", "sse_data"]

MODEL_ID = "test-model"
_EMBEDDING_DIMENSIONS = 8
# A valid 1x1 transparent PNG, the image every generation returns.
_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
FLAGGED_WORD = "forbidden"
"""Moderation flags (as ``violence``) exactly the inputs containing this word."""

_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def openai_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return json_response(status, {"error": {"message": message, "type": kind, "code": code}}, headers)


def sse_data(payload: Any, event: str | None = None) -> bytes:
    """One server-sent event: an optional ``event:`` line and compact JSON ``data:``."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"event: " + event.encode() + b"\n" + data if event else data


def _vector(item: Any) -> list[float]:
    """Deterministic embedding; multiples of 1/128 so float and base64 (float32) encodings agree."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:_EMBEDDING_DIMENSIONS]]


def _count_tokens(item: Any) -> int:
    return len(item) if isinstance(item, list) else len(str(item).split())


def _thirds(text: str) -> list[str]:
    third = len(text) // 3
    return [text[:third], text[third : 2 * third], text[2 * third :]]


def _greeting(claims: Claims) -> str:
    return f"Hello from upstream (client_id={claims.get('sub')})"


def _words(value: Any) -> set[str]:
    return {word.strip(".,!?").lower() for word in str(value).split()}


class OpenAIDialect(BearerGateway):
    """OpenAI endpoints behind the bearer check; subclasses map their URL layout onto ``_serve``."""

    def __init__(
        self,
        token_server: TokenServer | None = None,
        *,
        required_audience: str | None = None,
        static_api_key: str | None = None,
    ) -> None:
        super().__init__(token_server, required_audience=required_audience, static_api_key=static_api_key)
        self._stored_responses: dict[str, dict[str, Any]] = {}

    @property
    def stored_responses(self) -> dict[str, dict[str, Any]]:
        """Responses kept for ``GET``/``DELETE /responses/{id}`` (all but ``"store": false`` ones), by id."""
        with self._lock:
            return dict(self._stored_responses)

    def reset(self) -> None:
        """Forget counters, records, pending faults and stored responses."""
        super().reset()
        with self._lock:
            self._stored_responses.clear()

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
        return openai_error(status, message, code, headers)

    def _serve(
        self, method: str, endpoint: str, request: RecordedRequest, claims: Claims, model: str
    ) -> Response:
        """Answer ``method endpoint`` (e.g. ``POST chat/completions``); ``model`` when the body names none."""
        if endpoint.startswith("responses/") and endpoint.count("/") == 1:
            response_id = endpoint.partition("/")[2]
            if method == "GET":
                return self._get_response(response_id)
            if method == "DELETE":
                return self._delete_response(response_id)
        handlers: dict[str, Callable[[RecordedRequest, Claims, str], Response]] = {
            "chat/completions": self._chat,
            "completions": self._completions,
            "embeddings": self._embeddings,
            "responses": self._responses,
            "images/generations": self._images,
            "audio/transcriptions": self._transcription,
            "audio/speech": self._speech,
            "moderations": self._moderation,
            "rerank": self._rerank,
        }
        handler = handlers.get(endpoint) if method == "POST" else None
        if handler is None:
            return self._error(404, f"no route for {method} {request.path}", "not_found")
        return handler(request, claims, model)

    # -- chat and text ------------------------------------------------------------------------

    def _chat(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._error(400, "body must be a JSON object with messages", "invalid_request")
        model = str(body.get("model") or model)
        content = _greeting(claims)
        prompt_tokens = sum(
            _count_tokens(m.get("content", "")) for m in body["messages"] if isinstance(m, dict)
        )
        usage = _usage(prompt_tokens, _count_tokens(content))
        header = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": content}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            return json_response(
                200, {**header, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return sse_data({**header, "object": "chat.completion.chunk", "choices": [choice]})

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _thirds(content)]
        events.append(chunk({}, "stop"))
        if _include_usage(body):
            events.append(
                sse_data({**header, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            )
        events.append(b"data: [DONE]\n\n")
        return Response(200, headers=_SSE_HEADERS, chunks=events)

    def _completions(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """Legacy text completions: the prompt echoed after the greeting."""
        body = request.json
        if not isinstance(body, dict) or "prompt" not in body:
            return self._error(400, "body must be a JSON object with a prompt", "invalid_request")
        model = str(body.get("model") or model)
        text = f"{_greeting(claims)}: {body['prompt']}"
        usage = _usage(_count_tokens(body["prompt"]), _count_tokens(text))
        header = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time())}
        header["model"] = model
        if not body.get("stream"):
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
            return json_response(200, {**header, "choices": [choice], "usage": usage})

        def chunk(piece: str, finish_reason: str | None = None) -> bytes:
            choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            return sse_data({**header, "choices": [choice]})

        events = [chunk(piece) for piece in _thirds(text)] + [chunk("", "stop")]
        if _include_usage(body):
            events.append(sse_data({**header, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return Response(200, headers=_SSE_HEADERS, chunks=events)

    def _embeddings(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        body = request.json
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs)
        ):
            items: list[Any] = [inputs]
        elif isinstance(inputs, list) and inputs:
            items = inputs
        else:
            return self._error(
                400, "input must be a string, a list of strings or token lists", "invalid_request"
            )
        assert isinstance(body, dict)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector = _vector(item)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_count_tokens(item) for item in items)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        model = str(body.get("model") or model)
        return json_response(200, {"object": "list", "data": data, "model": model, "usage": usage})

    # -- Responses API ------------------------------------------------------------------------

    def _responses(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """``POST /responses``: text naming the caller and any ``previous_response_id``; SSE when streamed."""
        body = request.json
        if not isinstance(body, dict) or "input" not in body:
            return self._error(400, "body must be a JSON object with input", "invalid_request")
        previous = body.get("previous_response_id")
        if previous is not None and self.stored_responses.get(str(previous)) is None:
            return self._error(
                400, f"Previous response with id '{previous}' not found.", "previous_response_not_found"
            )
        text = _greeting(claims) + (f" previous_response_id={previous}" if previous else "")
        response_id, message_id = f"resp_{uuid.uuid4().hex}", f"msg_{uuid.uuid4().hex}"
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        item = {
            "id": message_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        input_tokens, output_tokens = _count_tokens(json.dumps(body["input"])), _count_tokens(text)
        final = _response_object(response_id, str(body.get("model") or model), body, "completed", [item])
        final["usage"] = {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }
        if body.get("store", True) is not False:
            with self._lock:
                self._stored_responses[response_id] = final
        if not body.get("stream"):
            return json_response(200, final)
        return Response(200, headers=_SSE_HEADERS, chunks=_response_events(final, item, part))

    def _get_response(self, response_id: str) -> Response:
        with self._lock:
            stored = self._stored_responses.get(response_id)
        if stored is None:
            return self._error(404, f"Response with id '{response_id}' not found.", "not_found")
        return json_response(200, stored)

    def _delete_response(self, response_id: str) -> Response:
        with self._lock:
            stored = self._stored_responses.pop(response_id, None)
        if stored is None:
            return self._error(404, f"Response with id '{response_id}' not found.", "not_found")
        return json_response(200, {"id": response_id, "object": "response.deleted", "deleted": True})

    # -- images and audio ---------------------------------------------------------------------

    def _images(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """``n`` copies of a 1x1 PNG, as ``b64_json`` unless ``response_format`` is ``url``."""
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return self._error(400, "body must be a JSON object with a prompt", "invalid_request")
        count = body.get("n") or 1
        if not isinstance(count, int) or not 1 <= count <= 10:
            return self._error(400, "n must be an integer from 1 to 10", "invalid_request")
        if body.get("response_format") == "url":
            image: dict[str, str] = {"url": f"https://images.example.invalid/{uuid.uuid4().hex}.png"}
        else:
            image = {"b64_json": base64.b64encode(_PNG).decode()}
        data = [{**image, "revised_prompt": f"{body['prompt']} ({_greeting(claims)})"} for _ in range(count)]
        return json_response(200, {"created": int(time.time()), "data": data})

    def _transcription(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """Multipart ``file`` and ``model``; the text names the file, its size and the caller."""
        upload = request.files.get("file")
        if upload is None:
            return self._error(400, "multipart field 'file' is required", "invalid_request")
        model = (request.form.get("model") or [model])[0]
        text = f"{_greeting(claims)} heard {upload.filename} ({len(upload.data)} bytes) with {model}"
        response_format = (request.form.get("response_format") or ["json"])[0]
        if response_format == "text":
            return Response(200, text.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        if response_format == "verbose_json":
            verbose = {
                "task": "transcribe",
                "language": "english",
                "duration": 1.0,
                "text": text,
                "segments": [],
            }
            return json_response(200, verbose)
        return json_response(200, {"text": text})

    def _speech(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """Audio bytes: an ID3 header followed by the UTF-8 ``input``, typed by ``response_format``."""
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return self._error(400, "body must be a JSON object with an input", "invalid_request")
        content_type = _AUDIO_TYPES.get(str(body.get("response_format") or "mp3"), "audio/mpeg")
        return Response(200, speech_bytes(body["input"]), {"Content-Type": content_type})

    # -- classification -----------------------------------------------------------------------

    def _moderation(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        body = request.json
        inputs = body.get("input") if isinstance(body, dict) else None
        items = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(items, list) or not items:
            return self._error(400, "input must be a string or a list", "invalid_request")
        assert isinstance(body, dict)
        results = []
        for item in items:
            flagged = FLAGGED_WORD in json.dumps(item).lower()
            categories = {name: flagged and name == "violence" for name in _MODERATION_CATEGORIES}
            scores = {name: 0.99 if hit else 0.001 for name, hit in categories.items()}
            applied = {name: ["text"] for name in _MODERATION_CATEGORIES}
            results.append(
                {
                    "flagged": flagged,
                    "categories": categories,
                    "category_scores": scores,
                    "category_applied_input_types": applied,
                }
            )
        model = str(body.get("model") or "omni-moderation-latest")
        return json_response(200, {"id": f"modr-{uuid.uuid4().hex}", "model": model, "results": results})

    def _rerank(self, request: RecordedRequest, claims: Claims, model: str) -> Response:
        """vLLM/Cohere rerank: documents scored by the share of the query's words they contain."""
        body = request.json
        documents = body.get("documents") if isinstance(body, dict) else None
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("query"), str)
            or not isinstance(documents, list)
        ):
            return self._error(400, "body must be a JSON object with query and documents", "invalid_request")
        query = _words(body["query"])
        texts = [str(d.get("text", "") if isinstance(d, dict) else d) for d in documents]
        scores = [len(query & _words(text)) / max(len(query), 1) for text in texts]
        ranked = sorted(range(len(texts)), key=lambda index: -scores[index])  # stable: ties keep input order
        results = [
            {"index": index, "relevance_score": scores[index], "document": {"text": texts[index]}}
            for index in ranked
        ]
        top_n = body.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            results = results[:top_n]
        usage = {"total_tokens": _count_tokens(body["query"]) + sum(_count_tokens(d) for d in documents)}
        return json_response(
            200,
            {
                "id": f"rerank-{uuid.uuid4().hex}",
                "model": str(body.get("model") or model),
                "results": results,
                "usage": usage,
            },
        )


def speech_bytes(text: str) -> bytes:
    """What ``audio/speech`` answers for ``text``, so a test can compare the bytes it got."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + text.encode()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _response_object(
    response_id: str, model: str, body: dict[str, Any], status: str, output: list[Any]
) -> dict[str, Any]:
    """A Responses API ``response`` object echoing the request's settings."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _response_events(final: dict[str, Any], item: dict[str, Any], part: dict[str, Any]) -> list[bytes]:
    """The Responses API event stream for a one-message answer, in OpenAI's order."""
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    payloads: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": {**part, "text": ""}},
    ]
    payloads += [
        {"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []}
        for piece in _thirds(part["text"])
    ]
    payloads += [
        {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": final},
    ]
    return [
        sse_data({**payload, "sequence_number": number}, payload["type"])
        for number, payload in enumerate(payloads)
    ]
