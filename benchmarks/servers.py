"""The loopback identity provider and LLM gateway, each in a process of its own.

The benchmarked clients run in the parent process; the servers answer from two child processes
so that their work (RSA signing, JSON, HTTP parsing) never holds the clients' GIL, nor each
other's. The parent drives them through pipes: register clients, set token lifetimes and IdP
latency, read how many token requests each client made and when.

Both servers are the project's own test servers (``litellm_oauth2.testing``) with three
benchmark-only changes: token lifetimes can be set per client, every ``/token`` request is
time-stamped on the monotonic clock (system-wide on Linux, so comparable with the parent's),
and the gateway remembers tokens it has already verified, as real gateways do, so a request
with a JWT costs the server what a request with a static key costs.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from litellm_oauth2.testing import OpenAIUpstream, TokenServer
from litellm_oauth2.testing._http import RecordedRequest, Response, json_response


class BenchTokenServer(TokenServer):
    """``TokenServer`` with per-client lifetimes, request time stamps and a per-client 'down' switch."""

    def __init__(self) -> None:
        self._override = threading.local()
        self._default_lifetime = 3600.0
        self._lifetimes: dict[str, float] = {}
        self._stamps: list[tuple[float, str | None]] = []
        self._stamps_lock = threading.Lock()
        self._down: set[str] = set()
        super().__init__()

    @property
    def token_lifetime(self) -> float:
        override: float | None = getattr(self._override, "lifetime", None)
        return self._default_lifetime if override is None else override

    @token_lifetime.setter
    def token_lifetime(self, value: float) -> None:
        self._default_lifetime = value

    def set_lifetime(self, client_id: str, seconds: float | None) -> None:
        if seconds is None:
            self._lifetimes.pop(client_id, None)
        else:
            self._lifetimes[client_id] = seconds

    def set_down(self, client_id: str, down: bool) -> None:
        if down:
            self._down.add(client_id)
        else:
            self._down.discard(client_id)

    def stamps(self, client_id: str | None) -> list[float]:
        with self._stamps_lock:
            return [at for at, who in self._stamps if client_id is None or who == client_id]

    def _token_endpoint(self, request: RecordedRequest) -> Response:
        client_id = self._claimed_client_id(request)
        with self._stamps_lock:
            self._stamps.append((time.monotonic(), client_id))
        if client_id in self._down:
            return json_response(503, {"error": "temporarily_unavailable"})
        return super()._token_endpoint(request)

    def _token_payload(
        self, client_id: str, scope: str, audience: str | list[str], certificate: bytes | None = None
    ) -> dict[str, Any]:
        self._override.lifetime = self._lifetimes.get(client_id)
        try:
            return super()._token_payload(client_id, scope, audience, certificate)
        finally:
            self._override.lifetime = None


class BenchUpstream(OpenAIUpstream):
    """``OpenAIUpstream`` that caches verified JWTs and keeps no per-request records."""

    def __init__(self, token_server: TokenServer, static_api_key: str) -> None:
        super().__init__(token_server, static_api_key=static_api_key)
        self._verified: dict[str, dict[str, Any]] = {}

    def _verify(self, token: str) -> dict[str, Any]:
        claims = self._verified.get(token)
        if claims is None or claims.get("exp", 0) <= time.time():
            claims = super()._verify(token)
            self._verified[token] = claims
        return claims

    def respond(self, request: RecordedRequest) -> Response:
        response = super().respond(request)
        with self._lock:
            self._recorded.clear()  # hundreds of thousands of requests: keep counters only
        return response


class _RemoteIdP:
    """What the gateway needs of the identity provider when that runs in another process."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url

    def is_revoked(self, token_or_jti: str) -> bool:
        return False


def _answer(conn: Connection, commands: dict[str, Any]) -> None:
    while True:
        name, args = conn.recv()
        if name == "stop":
            return
        try:
            conn.send(("ok", commands[name](*args)))
        except Exception:
            conn.send(("error", traceback.format_exc(limit=3)))


def _serve_idp(conn: Connection) -> None:
    """Child process: the token endpoint, answering the parent's commands until 'stop'."""
    tokens = BenchTokenServer().start()
    commands: dict[str, Any] = {
        "add_client": tokens.add_client,
        "set_lifetime": tokens.set_lifetime,
        "set_default_lifetime": lambda seconds: setattr(tokens, "token_lifetime", seconds),
        "set_delay": lambda seconds: setattr(tokens, "delay", seconds),
        "set_down": tokens.set_down,
        "token_requests": lambda client_id: tokens.token_requests_for(client_id),
        "stamps": tokens.stamps,
        "issued_tokens": lambda: tokens.issued_tokens,
    }
    conn.send(("ready", {"token_url": tokens.token_url, "jwks_url": tokens.jwks_url}))
    try:
        _answer(conn, commands)
    finally:
        tokens.close()
        conn.send(("stopped", None))


def _serve_gateway(conn: Connection, jwks_url: str, static_api_key: str) -> None:
    """Child process: the OpenAI-compatible gateway, answering the parent's commands until 'stop'."""
    upstream = BenchUpstream(_RemoteIdP(jwks_url), static_api_key).start()  # type: ignore[arg-type]
    commands: dict[str, Any] = {
        "upstream_counts": lambda: (
            upstream.requests,
            upstream.authorized_requests,
            upstream.unauthorized_requests,
        ),
        "upstream_reset": upstream.reset,
    }
    conn.send(("ready", {"api_base": upstream.base_url}))
    try:
        _answer(conn, commands)
    finally:
        upstream.close()
        conn.send(("stopped", None))


class _Child:
    def __init__(self, name: str, target: Any, *args: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), name=name, daemon=True)
        self.lock = threading.Lock()

    def start(self) -> dict[str, str]:
        self.process.start()
        if not self.conn.poll(60):
            raise RuntimeError(f"{self.process.name} did not start within 60 s")
        status, info = self.conn.recv()
        if status != "ready":
            raise RuntimeError(f"{self.process.name} failed to start: {info}")
        return dict(info)

    def call(self, name: str, *args: Any) -> Any:
        with self.lock:
            self.conn.send((name, args))
            status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"benchmark server command {name} failed:\n{result}")
        return result

    def stop(self) -> None:
        with self.lock:
            try:
                self.conn.send(("stop", ()))
                if self.conn.poll(30):
                    self.conn.recv()
            except (OSError, EOFError):
                pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


class Servers:
    """Parent-side handle: ``with Servers(key) as servers: servers.token_url ...``.

    The identity provider and the gateway run in two child processes, as they would on two
    hosts: a token being signed never holds up the gateway's answers.
    """

    def __init__(self, static_api_key: str) -> None:
        self._static_api_key = static_api_key
        self._idp = _Child("bench-idp", _serve_idp)
        self._gateway: _Child | None = None
        self.token_url = ""
        self.api_base = ""

    def __enter__(self) -> Servers:
        info = self._idp.start()
        self.token_url = info["token_url"]
        self._gateway = _Child("bench-gateway", _serve_gateway, info["jwks_url"], self._static_api_key)
        self.api_base = self._gateway.start()["api_base"]
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._gateway is not None:
            self._gateway.stop()
        self._idp.stop()

    def _call(self, name: str, *args: Any) -> Any:
        return self._idp.call(name, *args)

    def _gateway_call(self, name: str) -> Any:
        assert self._gateway is not None
        return self._gateway.call(name)

    def add_client(self, client_id: str, secret: str) -> None:
        self._call("add_client", client_id, secret)

    def set_lifetime(self, client_id: str, seconds: float | None) -> None:
        self._call("set_lifetime", client_id, seconds)

    def set_default_lifetime(self, seconds: float) -> None:
        self._call("set_default_lifetime", seconds)

    def set_delay(self, seconds: float) -> None:
        """Latency of the identity provider: every ``/token`` answer waits this long."""
        self._call("set_delay", seconds)

    def set_down(self, client_id: str, down: bool) -> None:
        """While down, ``/token`` answers 503 at once for this client (used to end a runaway stampede)."""
        self._call("set_down", client_id, down)

    def token_requests(self, client_id: str) -> int:
        return int(self._call("token_requests", client_id))

    def stamps(self, client_id: str) -> list[float]:
        """``time.monotonic()`` at which each ``/token`` request of ``client_id`` arrived."""
        return list(self._call("stamps", client_id))

    def issued_tokens(self) -> list[str]:
        return list(self._call("issued_tokens"))

    def upstream_counts(self) -> tuple[int, int, int]:
        requests, authorized, unauthorized = self._gateway_call("upstream_counts")
        return int(requests), int(authorized), int(unauthorized)

    def upstream_reset(self) -> None:
        self._gateway_call("upstream_reset")
