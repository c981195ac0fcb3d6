"""An OpenAI-compatible fake LLM gateway on loopback that only answers valid bearer tokens.

It validates tokens the way a real gateway does (the issuer's JWKS fetched over HTTP, or the
HS256 key it shares with the issuer; expiry, audience, revocation), so tests prove that the
plugin's tokens are actually accepted on the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import threading
import time
import urllib.request
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import _jwt
from ._http import LoopbackServer, RecordedRequest, Response, json_response
from .token_server import TokenServer

__all__ = ["MODEL_ID", "OpenAIUpstream"]

if TYPE_CHECKING:
    import jwt

MODEL_ID = "test-model"
_EMBEDDING_DIMENSIONS = 8


class _Rejected(Exception):
    """A bearer token that must be refused; the message becomes ``error_description``."""


def _openai_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return json_response(status, {"error": {"message": message, "type": kind, "code": code}}, headers)


def _vector(item: Any) -> list[float]:
    """Deterministic embedding; multiples of 1/128 so float and base64 (float32) encodings agree."""
    digest = hashlib.sha256(json.dumps(item).encode()).digest()
    return [(byte - 128) / 128 for byte in digest[:_EMBEDDING_DIMENSIONS]]


def _count_tokens(item: Any) -> int:
    return len(item) if isinstance(item, list) else len(str(item).split())


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class OpenAIUpstream(LoopbackServer):
    """Serves ``POST /v1/chat/completions`` (JSON and SSE), ``POST /v1/embeddings`` and ``GET /v1/models``.

    Accepts ``Authorization: Bearer <jwt>`` issued by ``token_server`` (checked against its JWKS
    fetched over HTTP, or its ``shared_key`` for HS256, plus its revocation list) and, if set,
    ``Bearer <static_api_key>``.
    """

    def __init__(
        self,
        token_server: TokenServer | None = None,
        *,
        required_audience: str | None = None,
        static_api_key: str | None = None,
    ) -> None:
        super().__init__()
        self.token_server = token_server
        self.required_audience = required_audience
        self.static_api_key = static_api_key
        self._lock = threading.Lock()
        self._jwks_lock = threading.Lock()
        self._jwks: dict[str, jwt.PyJWK] | None = None
        self._faults: deque[Response] = deque()
        self._requests = 0
        self._authorized = 0
        self._unauthorized = 0
        self._tokens: set[str] = set()
        self._recorded: list[RecordedRequest] = []

    @property
    def base_url(self) -> str:
        """What clients use as ``api_base``."""
        return self.url + "/v1"

    @property
    def requests(self) -> int:
        """All requests received."""
        with self._lock:
            return self._requests

    @property
    def authorized_requests(self) -> int:
        """Requests that carried a valid credential (even if an injected fault then failed them)."""
        with self._lock:
            return self._authorized

    @property
    def unauthorized_requests(self) -> int:
        with self._lock:
            return self._unauthorized

    @property
    def distinct_tokens(self) -> set[str]:
        """Every bearer token presented, valid or not."""
        with self._lock:
            return set(self._tokens)

    @property
    def recorded(self) -> list[RecordedRequest]:
        """Copy of all requests received, oldest first."""
        with self._lock:
            return list(self._recorded)

    def fail_next(
        self,
        n: int = 1,
        status: int = 401,
        *,
        error: str = "invalid_token",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail the next ``n`` requests even when their token is valid (revocation, key rollover, 429...).

        401 and 403 carry ``WWW-Authenticate: Bearer error="<error>"`` (RFC 6750 §3).
        """
        challenge = {"WWW-Authenticate": f'Bearer error="{error}"'} if status in (401, 403) else {}
        response = _openai_error(
            status, f"injected failure: {error}", error, {**challenge, **(headers or {})}
        )
        with self._lock:
            self._faults.extend([response] * n)

    def reset(self) -> None:
        """Forget counters, records and pending faults."""
        with self._lock:
            self._faults.clear()
            self._requests = self._authorized = self._unauthorized = 0
            self._tokens.clear()
            self._recorded.clear()

    # -- HTTP ---------------------------------------------------------------------------------

    def respond(self, request: RecordedRequest) -> Response:
        claims, rejection = self._authorize(request)
        with self._lock:
            self._requests += 1
            self._recorded.append(request)
            if claims is None:
                self._unauthorized += 1
            else:
                self._authorized += 1
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            return fault
        if claims is None:
            assert rejection is not None
            return rejection
        route = (request.method, urlsplit(request.path).path.rstrip("/"))
        if route == ("POST", "/v1/chat/completions"):
            return self._chat(request, claims)
        if route == ("POST", "/v1/embeddings"):
            return self._embeddings(request)
        if route == ("GET", "/v1/models"):
            model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "litellm-oauth2"}
            return json_response(200, {"object": "list", "data": [model]})
        return _openai_error(404, f"no route for {request.method} {request.path}", "not_found")

    # -- authentication -----------------------------------------------------------------------

    def _authorize(self, request: RecordedRequest) -> tuple[dict[str, Any] | None, Response | None]:
        """Claims of a valid credential, or the 401 to send."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            message = "missing bearer token"
            return None, _openai_error(
                401, message, "invalid_api_key", {"WWW-Authenticate": 'Bearer realm="upstream"'}
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if token and scheme.lower() == "bearer":
            with self._lock:
                self._tokens.add(token)
        try:
            if scheme.lower() != "bearer" or not token:
                raise _Rejected("expected a Bearer token")
            if self.static_api_key is not None and hmac.compare_digest(
                token.encode(), self.static_api_key.encode()
            ):
                return {"sub": "static-api-key"}, None
            return self._verify(token), None
        except _Rejected as exc:
            description = str(exc).replace('"', "'").replace("\\", "/")
            challenge = f'Bearer error="invalid_token", error_description="{description}"'
            return None, _openai_error(
                401, "invalid bearer token", "invalid_api_key", {"WWW-Authenticate": challenge}
            )

    def _verify(self, token: str) -> dict[str, Any]:
        if self.token_server is None:
            raise _Rejected("unknown api key")
        try:
            kid = _jwt.unverified_header(token).get("kid")
        except _jwt.InvalidToken as exc:
            raise _Rejected(str(exc)) from exc
        # An issuer in another process may be any object with jwks_url and is_revoked (the benchmarks').
        shared_key: bytes | None = getattr(self.token_server, "shared_key", None)
        try:
            if shared_key is not None:  # the algorithm is the issuer's, whatever the token's header says
                claims = _jwt.decode_hs256(token, shared_key)
            else:
                claims = self._verify_with_jwks(self.token_server, token, kid)
        except _jwt.InvalidToken as exc:
            raise _Rejected(str(exc)) from exc
        if self.token_server.is_revoked(str(claims.get("jti") or token)):
            raise _Rejected("token has been revoked")
        if self.required_audience is not None:
            audience = claims.get("aud")
            audiences = audience if isinstance(audience, list) else [audience]
            if self.required_audience not in audiences:
                raise _Rejected("token audience does not include this gateway")
        return claims

    def _verify_with_jwks(self, token_server: TokenServer, token: str, kid: object) -> dict[str, Any]:
        """RS256/ES256 claims; raises ``_jwt.InvalidToken`` or ``_Rejected`` (a server with these keys has PyJWT)."""
        import jwt

        key = self._signing_key(token_server, kid) if isinstance(kid, str) else None
        if key is None:
            raise _Rejected("unknown signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[key.algorithm_name], options={"verify_aud": False, "require": ["exp"]}
            )
        except jwt.PyJWTError as exc:
            raise _jwt.InvalidToken(str(exc)) from exc
        return claims

    def _signing_key(self, token_server: TokenServer, kid: str) -> jwt.PyJWK | None:
        """JWKS fetched lazily over HTTP and cached; refetched once when a new ``kid`` shows up."""
        import jwt

        with self._jwks_lock:
            if self._jwks is None or kid not in self._jwks:
                try:
                    with urllib.request.urlopen(token_server.jwks_url, timeout=10) as reply:
                        key_set = jwt.PyJWKSet.from_dict(json.load(reply))
                except (OSError, ValueError, RuntimeError, jwt.PyJWTError) as exc:
                    raise _Rejected(f"signing keys unavailable: {exc}") from exc
                self._jwks = {key.key_id: key for key in key_set.keys if key.key_id}
            return self._jwks.get(kid)

    # -- endpoints ----------------------------------------------------------------------------

    def _chat(self, request: RecordedRequest, claims: dict[str, Any]) -> Response:
        body = request.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _openai_error(400, "body must be a JSON object with messages", "invalid_request")
        model = str(body.get("model") or MODEL_ID)
        content = f"Hello from upstream (client_id={claims.get('sub')})"
        prompt_tokens = sum(
            _count_tokens(m.get("content", "")) for m in body["messages"] if isinstance(m, dict)
        )
        completion_tokens = _count_tokens(content)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        header = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            message = {"role": "assistant", "content": content}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            return json_response(
                200, {**header, "object": "chat.completion", "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return _sse({**header, "object": "chat.completion.chunk", "choices": [choice]})

        third = len(content) // 3
        pieces = [content[:third], content[third : 2 * third], content[2 * third :]]
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in pieces]
        events.append(chunk({}, "stop"))
        stream_options = body.get("stream_options")
        if isinstance(stream_options, dict) and stream_options.get("include_usage"):
            events.append(_sse({**header, "object": "chat.completion.chunk", "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        return Response(200, headers=headers, chunks=events)

    def _embeddings(self, request: RecordedRequest) -> Response:
        body = request.json
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and all(isinstance(i, int) for i in inputs)
        ):
            items: list[Any] = [inputs]
        elif isinstance(inputs, list) and inputs:
            items = inputs
        else:
            return _openai_error(
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
        model = str(body.get("model") or MODEL_ID)
        return json_response(200, {"object": "list", "data": data, "model": model, "usage": usage})
