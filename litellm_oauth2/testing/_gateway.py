"""The bearer-token check, request log, counters and fault injection every loopback gateway shares.

A gateway validates tokens the way a real one does (the issuer's JWKS fetched over HTTP, or the
HS256 key it shares with the issuer; expiry, audience, revocation), so tests prove that the
plugin's tokens are actually accepted on the wire. Each dialect (OpenAI, Azure OpenAI, Anthropic)
is a thin subclass that supplies its error shape and its routes.
"""

from __future__ import annotations

import hmac
import json
import threading
import urllib.request
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _jwt
from ._http import LoopbackServer, RecordedRequest, Response
from ._tls import thumbprint
from .token_server import TokenServer

__all__ = ["BearerGateway", "Claims"]

if TYPE_CHECKING:
    import jwt

Claims = dict[str, Any]
"""The verified claims of the request's credential (``{"sub": "static-api-key"}`` for the static key)."""


class _Rejected(Exception):
    """A bearer token that must be refused; the message becomes ``error_description``."""


class BearerGateway(LoopbackServer):
    """Base of the fake LLM gateways: answers only requests with a valid ``Authorization: Bearer``.

    Accepts JWTs issued by ``token_server`` (checked against its JWKS fetched over HTTP, or its
    ``shared_key`` for HS256, plus its revocation list and, if set, ``required_audience``) and
    ``Bearer <static_api_key>`` when that is set. Every request is recorded and counted, valid or
    not; ``fail_next`` makes the next requests fail whatever their token. Subclasses implement
    ``_error`` (the dialect's error body) and ``_route`` (the endpoints).

    Mutual TLS: serve HTTPS with ``tls`` set before ``start`` (a context requiring client
    certificates, e.g. ``PrivateCA.server_context(require_client_certificate=True)``); with
    ``certificate_bound`` a token is accepted only when its ``cnf.x5t#S256`` is the certificate
    the request came with (RFC 8705 §3).
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
        self.certificate_bound = False
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
        """Requests refused for a missing or invalid credential."""
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

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request; raises ``LookupError`` when none arrived yet."""
        with self._lock:
            if not self._recorded:
                raise LookupError(f"{type(self).__name__} has received no request")
            return self._recorded[-1]

    def fail_next(
        self,
        n: int = 1,
        status: int = 401,
        *,
        error: str = "invalid_token",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail the next ``n`` requests even when their token is valid (revocation, key rollover, 429...).

        The body is the dialect's error shape; 401 and 403 carry
        ``WWW-Authenticate: Bearer error="<error>"`` (RFC 6750 §3).
        """
        challenge = {"WWW-Authenticate": f'Bearer error="{error}"'} if status in (401, 403) else {}
        response = self._error(status, f"injected failure: {error}", error, {**challenge, **(headers or {})})
        with self._lock:
            self._faults.extend([response] * n)

    def reset(self) -> None:
        """Forget counters, records and pending faults."""
        with self._lock:
            self._faults.clear()
            self._requests = self._authorized = self._unauthorized = 0
            self._tokens.clear()
            self._recorded.clear()

    # -- dialect ------------------------------------------------------------------------------

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
        """The dialect's error response; ``code`` is a short machine-readable reason."""
        raise NotImplementedError

    def _route(self, request: RecordedRequest, claims: Claims) -> Response:
        """Answer an authorized request."""
        raise NotImplementedError

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
        return self._route(request, claims)

    # -- authentication -----------------------------------------------------------------------

    def _authorize(self, request: RecordedRequest) -> tuple[Claims | None, Response | None]:
        """Claims of a valid credential, or the 401 to send."""
        authorization = request.headers.get("authorization")
        if authorization is None:
            return None, self._error(
                401,
                "missing bearer token",
                "invalid_api_key",
                {"WWW-Authenticate": 'Bearer realm="upstream"'},
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
            claims = self._verify(token)
            if self.certificate_bound:
                self._check_binding(claims, request.client_certificate)
            return claims, None
        except _Rejected as exc:
            description = str(exc).replace('"', "'").replace("\\", "/")
            challenge = f'Bearer error="invalid_token", error_description="{description}"'
            return None, self._error(
                401, "invalid bearer token", "invalid_api_key", {"WWW-Authenticate": challenge}
            )

    @staticmethod
    def _check_binding(claims: Claims, certificate: bytes | None) -> None:
        """RFC 8705 §3: the token's ``cnf.x5t#S256`` must be the presented certificate's."""
        if certificate is None:
            raise _Rejected("a certificate-bound token needs the client certificate it is bound to")
        confirmation = claims.get("cnf")
        bound = confirmation.get("x5t#S256") if isinstance(confirmation, dict) else None
        if not isinstance(bound, str) or not hmac.compare_digest(bound, thumbprint(certificate)):
            raise _Rejected("the token is not bound to the presented client certificate")

    def _verify(self, token: str) -> Claims:
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

    def _verify_with_jwks(self, token_server: TokenServer, token: str, kid: object) -> Claims:
        """RS256/ES256 claims; raises ``_jwt.InvalidToken`` or ``_Rejected`` (a server with these keys has PyJWT)."""
        import jwt

        key = self._signing_key(token_server, kid) if isinstance(kid, str) else None
        if key is None:
            raise _Rejected("unknown signing key")
        try:
            claims: Claims = jwt.decode(
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
