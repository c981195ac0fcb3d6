"""Authlib's OAuth2 authorization server, run for real on a loopback port without a web framework.

An independent, widely used implementation of the token endpoint to test our client against:
``authlib.oauth2.rfc6749.AuthorizationServer`` with the client credentials grant, and the
``client_secret_basic``, ``client_secret_post`` and ``private_key_jwt`` (RFC 7523, Authlib's
``JWTBearerClientAssertion``) client authentication methods. The glue does what Authlib's Flask
integration does (``FlaskOAuth2Request``, ``handle_response``) on top of ``http.server``: the
form body is decoded as ``application/x-www-form-urlencoded`` (as Werkzeug does) and the headers
are passed through unchanged, so every protocol decision is Authlib's own.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qsl

from authlib.common.security import generate_token  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list  # type: ignore[import-untyped]
from authlib.oauth2.rfc6750 import BearerTokenGenerator  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion  # type: ignore[import-untyped]
from joserfc.jwk import ECKey, KeySet, RSAKey

TOKEN_LIFETIME = 300
SCOPES_SUPPORTED = ("chat.read", "chat.write", "models.list")
PublicKey = RSAKey | ECKey | KeySet


@dataclass(frozen=True)
class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """A client as Authlib sees it: one token endpoint auth method, a secret or a public key."""

    client_id: str
    auth_method: str
    secret: str | None = None
    public_key: PublicKey | None = None
    scope: str = " ".join(SCOPES_SUPPORTED)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_response_type(self, response_type: str) -> bool:
        return False

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have (Authlib's SQLAlchemy mixin does the same)."""
        if not scope:
            return ""
        allowed = set(self.scope.split())
        return str(list_to_scope([s for s in scope_to_list(scope) if s in allowed]))

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret is not None and hmac.compare_digest(client_secret.encode(), self.secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == self.auth_method

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


@dataclass(frozen=True)
class IssuedToken:
    client_id: str
    auth_method: str
    scope: str | None
    access_token: str


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]  # noqa: RUF012


class _PrivateKeyJWT(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 §2.2 client authentication, audience = the token endpoint, single-use ``jti``."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, token_url: str) -> None:
        super().__init__(validate_jti=True, leeway=60)
        self._audience = token_url
        self._seen_jti: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get_audiences(self) -> list[str]:
        return [self._audience]

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        key = (str(claims["sub"]), jti)
        with self._lock:
            if key in self._seen_jti:
                return False
            self._seen_jti.add(key)
            return True

    def resolve_client_public_key(self, client: RegisteredClient) -> PublicKey:
        assert client.public_key is not None
        return client.public_key


class _FormPayload(OAuth2Payload):  # type: ignore[misc]
    """Like Flask's ``request.values``: the first value of each parameter, and all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: dict[str, list[str]] = {}
        for name, value in pairs:
            self._data.setdefault(name, value)
            self._datalist.setdefault(name, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class _StdlibOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """What ``FlaskOAuth2Request`` provides, built from an ``http.server`` request."""

    def __init__(self, method: str, uri: str, headers: Any, pairs: list[tuple[str, str]]) -> None:
        super().__init__(method=method, uri=uri, headers=headers)
        self.payload = _FormPayload(pairs)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class _AuthlibServer(AuthorizationServer):  # type: ignore[misc]
    """The framework hooks Authlib leaves to integrations, and an in-memory client/token store."""

    def __init__(self, token_url: str) -> None:
        super().__init__(scopes_supported=list(SCOPES_SUPPORTED))
        self.clients: dict[str, RegisteredClient] = {}
        self.issued: list[IssuedToken] = []
        self.register_grant(_ClientCredentialsGrant)
        self.register_client_auth_method("private_key_jwt", _PrivateKeyJWT(token_url))
        self.register_token_generator(
            "default",
            BearerTokenGenerator(
                access_token_generator=lambda **_: generate_token(42), expires_generator=TOKEN_LIFETIME
            ),
        )

    def query_client(self, client_id: str) -> RegisteredClient | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: _StdlibOAuth2Request) -> None:
        self.issued.append(
            IssuedToken(
                request.client.client_id, request.auth_method, token.get("scope"), token["access_token"]
            )
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Flask sends blinker signals here; nothing listens in the tests."""

    def create_oauth2_request(self, request: _StdlibOAuth2Request) -> _StdlibOAuth2Request:
        return request

    def handle_response(
        self, status: int, body: dict[str, Any] | str, headers: list[tuple[str, str]]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        payload = json.dumps(body) if isinstance(body, dict) else body
        return status, payload.encode(), headers


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        owner = self.server.owner
        with owner.lock:
            owner.requests += 1
        if self.path != "/token":
            self._send(404, b"", [])
            return
        # Werkzeug decodes a form body the same way: application/x-www-form-urlencoded, "+" is a space.
        pairs = parse_qsl(body, keep_blank_values=True)
        request = _StdlibOAuth2Request("POST", owner.token_url, self.headers, pairs)
        with owner.lock:  # Authlib's server and our store are not meant to be shared between threads
            status, payload, headers = owner.authlib.create_token_response(request)
        self._send(status, payload, headers)

    def _send(self, status: int, payload: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: AuthlibTokenServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can stall without a network.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]


class AuthlibTokenServer:
    """Authlib's token endpoint at ``token_url``; counts every HTTP request it receives."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self._http = _HTTPServer(self)
        self.token_url = f"http://127.0.0.1:{self._http.server_port}/token"
        self.authlib = _AuthlibServer(self.token_url)

    @property
    def issued(self) -> list[IssuedToken]:
        return self.authlib.issued

    def add_client(self, client: RegisteredClient) -> None:
        self.authlib.clients[client.client_id] = client

    def reset(self) -> None:
        with self.lock:
            self.requests = 0
            self.authlib.issued.clear()

    @contextmanager
    def running(self) -> Iterator[AuthlibTokenServer]:
        thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self._http.shutdown()
            self._http.server_close()
            thread.join()
