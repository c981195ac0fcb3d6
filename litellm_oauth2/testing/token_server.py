"""A real OAuth2 token endpoint (RFC 6749 client credentials) on loopback, with fault injection.

Tests, the CLI demo and users' own suites point the plugin at it to exercise every client
authentication method and every way a token endpoint can misbehave, over real HTTP.

HS256 access tokens need only the standard library, so the demo runs on a plain install; RS256 and
ES256 tokens (published at ``/jwks``) and ``private_key_jwt`` clients need the ``jwt`` extra.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
import ssl
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote_plus, urlsplit

from . import _jwt
from ._http import LoopbackServer, RecordedRequest, Response, _Handler, json_response, media_type
from ._tls import thumbprint

__all__ = [
    "FEDERATED_AUDIENCE",
    "FEDERATION_ISSUER",
    "KEY_TYPES",
    "MALFORM_KINDS",
    "ReplayResponse",
    "TokenServer",
]

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The workload identity platform whose tokens the server trusts (as Entra trusts an AKS cluster's
# OIDC issuer), and the audience such tokens carry for Entra.
FEDERATION_ISSUER = "https://federation.litellm-oauth2.test"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_AUDIENCE = "litellm-oauth2-test"
MALFORM_KINDS = frozenset(
    {
        "non_json",
        "missing_access_token",
        "missing_token_type",
        "wrong_token_type",
        "huge",
        "newline_token",
        "empty_token",
        "negative_expires_in",
        "string_expires_in",
        "no_expires_in",
        "no_expires_in_opaque",
        "json_array",
    }
)
_RSA_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
_EC_ALGORITHMS = ["ES256", "ES384", "ES512"]
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_HUGE_PADDING = 2 * 1024 * 1024 + 1
KEY_TYPES = ("RSA", "EC", "HS256")

# An injected fault answers the request itself, or returns None to let it be served normally.
_Fault = Callable[[RecordedRequest, str | None], Response | None]
_TS = TypeVar("_TS", bound="TokenServer")


@dataclass(frozen=True)
class ReplayResponse:
    """One scripted answer to a ``/token`` request, written to the socket byte for byte (``replay_next``).

    Nothing is checked, escaped or added except the framing, so a test can send whatever a broken
    or hostile endpoint would: any status and reason, header lines with CR/LF or garbage (``str``
    written as latin-1, one character per byte), any body.

    * ``framing``: ``"length"`` adds ``Content-Length`` (``content_length``, default ``len(body)``;
      a larger value announces bytes that never come), ``"chunked"`` sends the body as ``chunks``
      chunks, ``"close"`` sends no length and ends the body by closing the connection.
    * ``cut_after``: only that many bytes of the body section (chunk framing included) are sent.
    * Timing: ``delay`` seconds before the first byte; the whole response (status line, headers
      and body) goes out in ``pieces`` writes, ``pause`` seconds apart (a slow or dribbling
      endpoint).
    * ``hang_up`` after the last byte: ``"no"`` keeps the connection (after a cut: a stall),
      ``"fin"`` closes it, ``"rst"`` resets it (TCP RST). ``"close"`` framing always closes.
    """

    status: int = 200
    reason: str = "OK"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    framing: Literal["length", "chunked", "close"] = "length"
    content_length: int | None = None
    chunks: int = 1
    cut_after: int | None = None
    delay: float = 0.0
    pieces: int = 1
    pause: float = 0.0
    hang_up: Literal["no", "fin", "rst"] = "no"

    def wire(self) -> bytes:
        """Every byte sent, in order (before being split into ``pieces``)."""
        lines = [
            f"HTTP/1.1 {self.status} {self.reason}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        body = self.body
        if self.framing == "length":
            length = len(body) if self.content_length is None else self.content_length
            lines.append(f"Content-Length: {length}")
        elif self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in _split(body, self.chunks) if c)
            body += b"0\r\n\r\n"
        if self.cut_after is not None:
            body = body[: max(0, self.cut_after)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _split(data: bytes, count: int) -> list[bytes]:
    size = -(-len(data) // max(1, count)) or 1
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


@dataclass
class _Replayed(Response):
    """What ``respond`` hands the handler for a replayed answer."""

    replay: ReplayResponse = field(default_factory=ReplayResponse)


def _answer_with(response: Response) -> _Fault:
    return lambda _request, _client_id: response


class _ReplayHandler(_Handler):
    """The loopback handler, plus raw writing of ``ReplayResponse`` answers."""

    def _write(self, response: Response) -> None:
        if not isinstance(response, _Replayed):
            super()._write(response)
            return
        replay = response.replay
        self._pause(replay.delay)
        for index, piece in enumerate(_split(replay.wire(), replay.pieces)):
            if index:
                self._pause(replay.pause)
            self.wfile.write(piece)
            self.wfile.flush()
        if replay.hang_up == "rst":
            self.server.reset_on_close(self.connection)
        if replay.hang_up != "no" or replay.framing == "close":
            self.close_connection = True

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self.server.closing.wait(seconds):
            raise ConnectionAbortedError("server closed")


class _OAuthError(Exception):
    """Raised anywhere while serving /token; rendered as an RFC 6749 §5.2 error response."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}


@dataclass
class _Client:
    client_id: str
    secret: str | None
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None  # set only with the jwt extra
    allowed_scopes: frozenset[str] | None
    refresh_token: str | None
    rotate_refresh_token: bool
    federated_subject: str | None = None
    certificate_subject: str | None = None  # tls_client_auth: the CN its CA-issued certificate must have
    certificate_der: bytes | None = None  # self_signed_tls_client_auth: the registered certificate


def _number(value: float) -> int | float:
    """``expires_in`` as an int when integral, as most real servers send it."""
    return int(value) if float(value).is_integer() else value


def _require_jwt_extra(what: str) -> None:
    """Raises ``ImportError`` naming the extra when PyJWT or cryptography is missing."""
    try:
        import cryptography  # noqa: F401
        import jwt  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"{what} needs PyJWT and cryptography (the jwt extra): pip install PyJWT cryptography,"
            " or use TokenServer(key_type='HS256'), which needs neither",
            name=exc.name,
        ) from exc


def _oauth_error(
    status: int, error: str, description: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    payload = {"error": error} if description is None else {"error": error, "error_description": description}
    return json_response(status, payload, {**_NO_STORE, **(headers or {})})


class TokenServer(LoopbackServer):
    """OAuth2 authorization server issuing signed JWT access tokens.

    Serves ``POST /token``, ``GET /jwks`` and the metadata (``GET /.well-known/openid-configuration``
    and ``/.well-known/oauth-authorization-server``). Every ``/token`` request is counted and
    recorded, including rejected ones and injected faults.
    ``key_type`` ``"RSA"`` (RS256) or ``"EC"`` (ES256) publishes the public key at ``/jwks`` and
    needs the ``jwt`` extra (``ImportError`` otherwise); ``"HS256"`` signs with ``shared_key``,
    which a gateway must be given, and publishes no key. ``port`` 0 (the default) takes a free one.
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 3600.0,
        issuer: str | None = None,
        key_type: str = "RSA",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if key_type not in KEY_TYPES:
            raise ValueError(f"key_type must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")
        super().__init__(port=port)
        self.tls = tls
        self.token_lifetime = token_lifetime
        """Seconds; returned as ``expires_in`` and used for ``exp``. May be changed at any time."""
        self.exp_lifetime: float | None = None
        """Seconds from ``iat`` (whole seconds) to ``exp``, as servers that truncate write them; may
        differ from ``expires_in``. ``None``: ``exp`` is ``token_lifetime`` from now, rounded up."""
        self.delay = 0.0
        self.metadata_overrides: dict[str, Any] = {}
        """Merged into the served metadata document (``metadata``)."""
        self.metadata_requests = 0
        """``GET`` requests for the metadata document served."""
        """Seconds every ``/token`` request waits before being answered (on top of ``delay_next``)."""
        self._issuer = issuer
        self._kid = uuid.uuid4().hex[:16]
        self.shared_key: bytes | None = None
        """The HS256 signing key (``None`` for RSA and EC): what a gateway checking these tokens is given."""
        self._key: Any = None
        self._jwks: dict[str, list[dict[str, Any]]] = {"keys": []}
        if key_type == "HS256":
            self.shared_key = secrets.token_bytes(32)
            self.algorithm = "HS256"
        else:
            _require_jwt_extra(f"TokenServer(key_type={key_type!r})")
            self._key, self.algorithm, jwk = _asymmetric_key(key_type)
            self._jwks["keys"].append({**jwk, "kid": self._kid, "use": "sig", "alg": self.algorithm})
        self._lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._faults: deque[_Fault] = deque()
        self._token_requests = 0
        self._per_client: Counter[str] = Counter()
        self._requests: list[RecordedRequest] = []
        self._issued: list[str] = []
        self._revoked: set[str] = set()
        self._seen_jtis: set[str] = set()
        self.federation_key = secrets.token_bytes(32)
        """The HS256 key of the trusted workload identity platform (``federated_assertion`` signs with it)."""

    def start(self: _TS) -> _TS:
        """Start serving (no-op when already running); returns ``self``."""
        super().start()
        httpd = self._httpd
        if httpd is not None:  # replay_next needs raw writes; other answers are served as before
            httpd.RequestHandlerClass = _ReplayHandler
        return self

    # -- addresses ---------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        """``iss`` of issued tokens: the ``issuer`` argument, else ``url``."""
        return self._issuer or self.url

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def metadata(self) -> dict[str, Any]:
        """The authorization server metadata served at both well-known locations (RFC 8414,
        OpenID Connect Discovery); ``metadata_overrides`` is merged in (a wrong ``issuer``, say)."""
        document: dict[str, Any] = {
            "issuer": self.issuer,
            "token_endpoint": self.token_url,
            "jwks_uri": self.jwks_url,
        }
        if self.tls is not None:  # RFC 8705 §5: where mTLS clients go (here, the same endpoint)
            document["mtls_endpoint_aliases"] = {"token_endpoint": self.token_url}
        return {**document, **self.metadata_overrides}

    # -- configuration -----------------------------------------------------------------------

    def add_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        public_key_pem: str | bytes | None = None,
        allowed_scopes: set[str] | None = None,
        refresh_token: str | None = None,
        rotate_refresh_token: bool = False,
        federated_subject: str | None = None,
        certificate_subject: str | None = None,
        certificate_pem: bytes | None = None,
    ) -> None:
        """Register (or replace) a client; a secret enables basic/post, a public key private_key_jwt,
        ``federated_subject`` client assertions from the trusted platform (``federated_assertion``),
        ``certificate_subject`` ``tls_client_auth`` with a certificate of the server's CA for that
        CN, ``certificate_pem`` ``self_signed_tls_client_auth`` with that certificate (which the
        server's ``tls`` context then trusts)."""
        public_key = None
        if public_key_pem is not None:
            _require_jwt_extra("a private_key_jwt client (public_key_pem)")
            from cryptography.hazmat.primitives.asymmetric import ec, rsa
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            loaded = load_pem_public_key(
                public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
            )
            if not isinstance(loaded, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
                raise ValueError("public_key_pem must be an RSA or EC public key")
            public_key = loaded
        client = _Client(
            client_id,
            client_secret,
            public_key,
            None if allowed_scopes is None else frozenset(allowed_scopes),
            refresh_token,
            rotate_refresh_token,
            federated_subject,
            certificate_subject,
            None if certificate_pem is None else ssl.PEM_cert_to_DER_cert(certificate_pem.decode()),
        )
        if certificate_pem is not None:
            if self.tls is None:
                raise ValueError("a self-signed client certificate needs TokenServer(tls=...)")
            self.tls.load_verify_locations(cadata=certificate_pem.decode())
        with self._lock:
            self._clients[client_id] = client

    def federated_assertion(
        self, subject: str, *, lifetime: float = 600.0, audience: str = FEDERATED_AUDIENCE
    ) -> str:
        """A token of the trusted workload identity platform for ``subject`` (what a Kubernetes
        projected service-account token is): HS256 under ``federation_key``, ``exp`` after ``lifetime``
        seconds (negative: already expired). Needs no extra."""
        now = time.time()
        claims = {
            "iss": FEDERATION_ISSUER,
            "sub": subject,
            "aud": audience,
            "iat": int(now),
            "exp": int(now + lifetime),
            "jti": uuid.uuid4().hex,
        }
        return _jwt.encode_hs256(claims, self.federation_key)

    # -- observations ------------------------------------------------------------------------

    @property
    def token_requests(self) -> int:
        """Number of ``POST /token`` requests received (any outcome)."""
        with self._lock:
            return self._token_requests

    def token_requests_for(self, client_id: str) -> int:
        """``/token`` requests that named ``client_id`` (via Basic, form or assertion), any outcome."""
        with self._lock:
            return self._per_client[client_id]

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copy of the recorded ``/token`` requests, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def issued_tokens(self) -> list[str]:
        """Copy of every signed access token handed out, oldest first."""
        with self._lock:
            return list(self._issued)

    def verify_access_token(self, token: str) -> dict[str, Any] | None:
        """Claims of ``token`` if signed by this server, unexpired and not revoked; else ``None``."""
        try:
            claims = self._verify_signature(token)
        except _jwt.InvalidToken:
            return None
        if self.is_revoked(token) or self.is_revoked(str(claims.get("jti", ""))):
            return None
        return claims

    def revoke(self, token: str) -> None:
        """Make ``token`` (and any token sharing its ``jti``) invalid from now on."""
        try:
            jti = _jwt.unverified_claims(token).get("jti")
        except _jwt.InvalidToken:
            jti = None
        with self._lock:
            self._revoked.add(token)
            if jti:
                self._revoked.add(str(jti))

    def is_revoked(self, token_or_jti: str) -> bool:
        """Whether a token, or a ``jti`` claim, was revoked; resource servers consult this."""
        with self._lock:
            return token_or_jti in self._revoked

    def reset(self) -> None:
        """Forget counts, records, issued tokens and pending faults; clients and revocations stay."""
        with self._lock:
            self._faults.clear()
            self._token_requests = 0
            self._per_client.clear()
            self._requests.clear()
            self._issued.clear()

    # -- fault injection (FIFO: each queued fault is consumed by one /token request) ------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        error: str | None = None,
        error_description: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> None:
        """Answer the next ``n`` token requests with ``status``.

        The body is ``body`` verbatim when given, else an OAuth error JSON with ``error`` (default
        ``server_error`` for 5xx, ``invalid_request`` otherwise). ``headers`` are added last.
        """
        if body is not None:
            response = Response(
                status, body, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
            )
        else:
            code = error or ("server_error" if status >= 500 else "invalid_request")
            response = _oauth_error(status, code, error_description, headers)
        self._enqueue(n, lambda _request, _client_id: response)

    def delay_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """Hold the next ``n`` token requests for ``seconds``, then answer them normally."""

        def delay(_request: RecordedRequest, _client_id: str | None) -> None:
            self.sleep(seconds)

        self._enqueue(n, delay)

    def malform_next(self, n: int = 1, kind: str = "non_json") -> None:
        """Answer the next ``n`` token requests with a broken 200 response, whatever their credentials.

        ``non_json`` (an HTML page), ``json_array`` (``[]``), ``no_expires_in_opaque`` (a random
        non-JWT token and no ``expires_in``); the others start from a real signed token (recorded in
        ``issued_tokens``) and then: ``missing_access_token``, ``missing_token_type``,
        ``wrong_token_type`` ("mac"), ``huge`` (body > 2 MiB), ``newline_token`` (token + CRLF header
        injection), ``empty_token``, ``negative_expires_in``, ``string_expires_in`` ("120"),
        ``no_expires_in`` (the JWT still carries ``exp``).
        """
        if kind not in MALFORM_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(MALFORM_KINDS)}")
        self._enqueue(n, lambda request, client_id: self._malformed(kind, request, client_id))

    def redirect_next(
        self, n: int = 1, location: str = "http://127.0.0.1:1/elsewhere", status: int = 302
    ) -> None:
        """Answer the next ``n`` token requests with a redirect (clients must not follow it blindly)."""
        response = Response(status, b"", {"Location": location, **_NO_STORE})
        self._enqueue(n, lambda _request, _client_id: response)

    def reset_connection_next(self, n: int = 1) -> None:
        """Drop the connection (TCP RST) of the next ``n`` token requests without answering."""
        response = Response(0, reset=True)
        self._enqueue(n, lambda _request, _client_id: response)

    def replay_next(self, *responses: ReplayResponse) -> None:
        """Answer the next ``len(responses)`` token requests with these scripted responses, in order.

        Replay mode: a test (or a property-based generator) decides every byte, pause and hang-up
        of what the endpoint sends; see ``ReplayResponse``. Requests are still counted and recorded.
        """
        for replay in responses:
            self._enqueue(1, _answer_with(_Replayed(replay.status, replay=replay)))

    def _enqueue(self, n: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    # -- HTTP ---------------------------------------------------------------------------------

    def respond(self, request: RecordedRequest) -> Response:
        path = urlsplit(request.path).path
        if path == "/token":
            if request.method != "POST":
                return _oauth_error(405, "invalid_request", "use POST", {"Allow": "POST"})
            return self._token_endpoint(request)
        if path == "/jwks":
            return json_response(200, self._jwks)
        if path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
            with self._lock:
                self.metadata_requests += 1
            return json_response(200, self.metadata())
        return json_response(404, {"error": "not_found"})

    def _token_endpoint(self, request: RecordedRequest) -> Response:
        client_id = self._claimed_client_id(request)
        with self._lock:
            self._token_requests += 1
            self._requests.append(request)
            if client_id is not None:
                self._per_client[client_id] += 1
            fault = self._faults.popleft() if self._faults else None
        self.sleep(self.delay)
        if fault is not None and (injected := fault(request, client_id)) is not None:
            return injected
        try:
            return self._grant(request)
        except _OAuthError as exc:
            return _oauth_error(exc.status, exc.error, exc.description, exc.headers)

    @staticmethod
    def _claimed_client_id(request: RecordedRequest) -> str | None:
        """The client a request claims to be, for per-client counting (not authentication)."""
        authorization = request.headers.get("authorization", "")
        if authorization[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(authorization[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return unquote_plus(decoded.partition(":")[0])
        if form_client_id := request.form.get("client_id"):
            return form_client_id[0]
        if assertion := request.form.get("client_assertion"):
            try:
                issuer = _jwt.unverified_claims(assertion[0]).get("iss")
            except _jwt.InvalidToken:
                return None
            return issuer if isinstance(issuer, str) else None
        return None

    def _grant(self, request: RecordedRequest) -> Response:
        if media_type(request.headers) != "application/x-www-form-urlencoded":
            raise _OAuthError(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        duplicated = sorted(
            name for name, values in request.form.items() if len(values) > 1 and name != "resource"
        )
        if duplicated:
            raise _OAuthError(400, "invalid_request", f"repeated parameter: {', '.join(duplicated)}")
        params = {name: values[0] for name, values in request.form.items()}
        client = self._authenticate(request, params)
        grant_type = params.get("grant_type")
        if not grant_type:
            raise _OAuthError(400, "invalid_request", "missing grant_type")
        resources, certificate = request.form.get("resource", []), request.client_certificate
        if grant_type == "client_credentials":
            return self._token_response(client, params, resources, certificate=certificate)
        if grant_type == "refresh_token":
            return self._token_response(client, params, resources, refresh=True, certificate=certificate)
        raise _OAuthError(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    # -- client authentication -----------------------------------------------------------------

    def _authenticate(self, request: RecordedRequest, params: dict[str, str]) -> _Client:
        authorization = request.headers.get("authorization")
        basic = authorization is not None and authorization[:6].lower() == "basic "
        post = "client_secret" in params
        assertion = "client_assertion" in params or "client_assertion_type" in params
        if basic + post + assertion > 1:
            raise _OAuthError(400, "invalid_request", "more than one client authentication method")
        challenge = {"WWW-Authenticate": 'Basic realm="test"'} if basic else {}
        client: _Client | None = None
        if authorization is not None and basic:
            client = self._basic_client(authorization[6:].strip())
        elif post:
            client = self._secret_client(params.get("client_id", ""), params["client_secret"])
        elif assertion:
            client = self._assertion_client(params)
        elif request.client_certificate is not None:
            client = self._certificate_client(params.get("client_id", ""), request.client_certificate)
        if client is None or params.get("client_id", client.client_id) != client.client_id:
            raise _OAuthError(401, "invalid_client", "client authentication failed", challenge)
        return client

    def _secret_client(self, client_id: str, secret: str) -> _Client | None:
        with self._lock:
            client = self._clients.get(client_id)
        if client is None or client.secret is None:
            return None
        return client if hmac.compare_digest(secret.encode(), client.secret.encode()) else None

    def _basic_client(self, credentials: str) -> _Client | None:
        """RFC 6749 §2.3.1 form-encoded id/secret, falling back to the raw (unencoded) form."""
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        raw_id, colon, raw_secret = decoded.partition(":")
        if not colon:
            return None
        return self._secret_client(unquote_plus(raw_id), unquote_plus(raw_secret)) or self._secret_client(
            raw_id, raw_secret
        )

    def _assertion_client(self, params: dict[str, str]) -> _Client | None:
        """RFC 7523 ``private_key_jwt``: signature, iss == sub == client, audience, exp and single-use jti."""
        assertion = params.get("client_assertion")
        if params.get("client_assertion_type") != JWT_BEARER_ASSERTION or not assertion:
            return None
        try:
            claimed = _jwt.unverified_claims(assertion)
        except _jwt.InvalidToken:
            return None
        with self._lock:
            client = self._clients.get(params.get("client_id") or str(claimed.get("iss")))
        if client is not None and client.federated_subject is not None:
            return self._federated_client(client, assertion)
        if client is None or client.public_key is None:
            return None
        import jwt  # present: add_client needed it to load the public key
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            claims = jwt.decode(
                assertion,
                client.public_key,
                algorithms=_RSA_ALGORITHMS
                if isinstance(client.public_key, rsa.RSAPublicKey)
                else _EC_ALGORITHMS,
                audience=[self.token_url, self.url, self.issuer],
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except jwt.PyJWTError:
            return None
        if claims["iss"] != client.client_id or claims["sub"] != client.client_id:
            return None
        jti = str(claims["jti"])
        with self._lock:
            replayed = jti in self._seen_jtis
            self._seen_jtis.add(jti)
        if replayed:
            raise _OAuthError(400, "invalid_client", "client_assertion jti was already used")
        return client

    def _certificate_client(self, client_id: str, der: bytes) -> _Client | None:
        """RFC 8705 §2: the TLS handshake checked the certificate; it must be the client's own
        (``tls_client_auth``: the registered CN; ``self_signed_tls_client_auth``: the registered one)."""
        with self._lock:
            client = self._clients.get(client_id)
        if client is None:
            return None
        if client.certificate_der is not None:
            return client if hmac.compare_digest(client.certificate_der, der) else None
        if client.certificate_subject is not None:
            return client if _common_name(der) == client.certificate_subject else None
        return None

    def _federated_client(self, client: _Client, assertion: str) -> _Client | None:
        """RFC 7521 §4.2 with a federated credential: the platform's signature and ``exp``, its
        issuer, the client's subject, an audience meant for this server. Reusable until it expires."""
        try:
            claims = _jwt.decode_hs256(assertion, self.federation_key)
        except _jwt.InvalidToken:
            return None
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        accepted = {FEDERATED_AUDIENCE, self.token_url, self.issuer}
        if claims.get("iss") != FEDERATION_ISSUER or claims.get("sub") != client.federated_subject:
            return None
        return client if accepted.intersection(a for a in audiences if isinstance(a, str)) else None

    # -- issuing -------------------------------------------------------------------------------

    def _token_response(
        self,
        client: _Client,
        params: dict[str, str],
        resources: list[str],
        *,
        refresh: bool = False,
        certificate: bytes | None = None,
    ) -> Response:
        scopes = list(dict.fromkeys(params.get("scope", "").split()))
        if client.allowed_scopes is not None and not set(scopes) <= client.allowed_scopes:
            raise _OAuthError(400, "invalid_scope", "requested scope is not allowed for this client")
        for resource in resources:
            parts = urlsplit(resource)
            if not parts.scheme or parts.fragment:
                raise _OAuthError(400, "invalid_target", "resource must be an absolute URI without fragment")
        new_refresh_token = self._use_refresh_token(client, params.get("refresh_token")) if refresh else None
        audience: str | list[str] = (
            params.get("audience") or (resources[0] if len(resources) == 1 else resources) or DEFAULT_AUDIENCE
        )
        payload = self._token_payload(client.client_id, " ".join(scopes), audience, certificate)
        if new_refresh_token is not None:
            payload["refresh_token"] = new_refresh_token
        return json_response(200, payload, _NO_STORE)

    def _use_refresh_token(self, client: _Client, presented: str | None) -> str | None:
        """Check (and, if configured, rotate) the client's refresh token; returns the new one."""
        with self._lock:
            current = client.refresh_token
            if presented is None or current is None or not hmac.compare_digest(presented, current):
                raise _OAuthError(400, "invalid_grant", "refresh_token is invalid")
            if not client.rotate_refresh_token:
                return None
            client.refresh_token = secrets.token_urlsafe(32)
            return client.refresh_token

    def _token_payload(
        self, client_id: str, scope: str, audience: str | list[str], certificate: bytes | None = None
    ) -> dict[str, Any]:
        """The token response; a request over mutual TLS gets a token bound to its certificate
        (RFC 8705 §3: ``cnf.x5t#S256``), which a gateway checks against the one presented to it."""
        now = time.time()
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": audience,
            "iat": int(now),
            "exp": math.ceil(now + self.token_lifetime)
            if self.exp_lifetime is None
            else _number(int(now) + self.exp_lifetime),
            "jti": uuid.uuid4().hex,
        }
        if scope:
            claims["scope"] = scope
        if certificate is not None:
            claims["cnf"] = {"x5t#S256": thumbprint(certificate)}
        token = self._sign(claims)
        with self._lock:
            self._issued.append(token)
        payload: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": _number(self.token_lifetime),
        }
        if scope:
            payload["scope"] = scope
        return payload

    def _sign(self, claims: dict[str, Any]) -> str:
        if self.shared_key is not None:
            return _jwt.encode_hs256(claims, self.shared_key, {"kid": self._kid})
        import jwt

        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self._kid})

    def _verify_signature(self, token: str) -> dict[str, Any]:
        """Claims of a token this server signed that has not expired; raises ``_jwt.InvalidToken``."""
        if self.shared_key is not None:
            return _jwt.decode_hs256(token, self.shared_key)
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=[self.algorithm],
                options={"verify_aud": False, "require": ["exp"]},
            )
        except jwt.PyJWTError as exc:
            raise _jwt.InvalidToken(str(exc)) from exc
        return claims

    def _malformed(self, kind: str, request: RecordedRequest, client_id: str | None) -> Response:
        if kind == "non_json":
            return Response(200, b"<html>oops</html>", {"Content-Type": "text/html; charset=utf-8"})
        if kind == "json_array":
            return json_response(200, [], _NO_STORE)
        if kind == "no_expires_in_opaque":
            return json_response(
                200, {"access_token": secrets.token_urlsafe(32), "token_type": "Bearer"}, _NO_STORE
            )
        scope = request.form.get("scope", [""])[0]
        payload = self._token_payload(client_id or "unknown-client", scope, DEFAULT_AUDIENCE)
        if kind == "missing_access_token":
            del payload["access_token"]
        elif kind == "missing_token_type":
            del payload["token_type"]
        elif kind == "wrong_token_type":
            payload["token_type"] = "mac"
        elif kind == "huge":
            payload["padding"] = "x" * _HUGE_PADDING
        elif kind == "newline_token":
            payload["access_token"] += "\r\nX-Injected: 1"
        elif kind == "empty_token":
            payload["access_token"] = ""
        elif kind == "negative_expires_in":
            payload["expires_in"] = -60
        elif kind == "string_expires_in":
            payload["expires_in"] = "120"
        else:  # "no_expires_in": the JWT still carries exp
            del payload["expires_in"]
        return json_response(200, payload, _NO_STORE)


def _common_name(der: bytes) -> str | None:
    """The subject CN of a DER certificate (needs ``cryptography``, as TLS client certificates do)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _asymmetric_key(key_type: str) -> tuple[Any, str, dict[str, Any]]:
    """A new private key, its JWS algorithm and its public JWK (needs the ``jwt`` extra)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    if key_type == "RSA":
        rsa_key = rsa.generate_private_key(65537, 2048)
        return rsa_key, "RS256", RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return ec_key, "ES256", ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
