"""Shared plumbing for the loopback test servers: a threaded HTTP/1.1 server that shuts down cleanly.

The servers are real sockets (not mocks) so that tests exercise the same HTTP stack, connection
pooling and error paths as production traffic.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

__all__ = ["FormFile", "LoopbackServer", "RecordedRequest", "Response", "json_response", "media_type"]

_S = TypeVar("_S", bound="LoopbackServer")


@dataclass(frozen=True)
class FormFile:
    """One file part of a ``multipart/form-data`` body."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    ``path`` keeps the query string (``route`` and ``query`` split it); ``headers`` has lower-cased
    names (look up ``headers["authorization"]``), repeated headers joined with ``", "``. ``form`` is
    filled for ``application/x-www-form-urlencoded`` bodies and the plain fields of
    ``multipart/form-data`` bodies, whose file parts go to ``files``; ``json`` is the parsed
    ``application/json`` body (``None`` when absent or unparsable). ``body`` is always the raw bytes.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)
    json: Any = None
    files: dict[str, FormFile] = field(default_factory=dict)
    client_certificate: bytes | None = None
    """The DER certificate the client presented in the TLS handshake (``None``: none, or plain HTTP)."""

    @property
    def route(self) -> str:
        """The path without its query string."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters, each with all its values."""
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    @property
    def api_version(self) -> str | None:
        """The ``api-version`` query parameter Azure OpenAI requires, if present."""
        return self.query.get("api-version", [None])[0]


@dataclass
class Response:
    """What a server answers. ``chunks`` streams with chunked encoding; ``reset`` sends a TCP RST."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None
    reset: bool = False


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """Compact JSON response; extra ``headers`` override the defaults."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def media_type(headers: dict[str, str]) -> str:
    """The lower-cased media type of ``Content-Type``, without parameters."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _multipart_boundary(content_type: str) -> bytes | None:
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"').encode("latin-1")
    return None


def _parse_multipart(body: bytes, boundary: bytes) -> tuple[dict[str, list[str]], dict[str, FormFile]]:
    """Fields and files of a ``multipart/form-data`` body (RFC 7578); malformed parts are skipped."""
    form: dict[str, list[str]] = {}
    files: dict[str, FormFile] = {}
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, separator, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            continue
        content = content.removesuffix(b"\r\n")
        part_headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            part_headers[name.strip().lower()] = value.strip()
        disposition = _disposition_parameters(part_headers.get("content-disposition", ""))
        field_name = disposition.get("name")
        if field_name is None:
            continue
        if "filename" in disposition:
            content_type = part_headers.get("content-type", "application/octet-stream")
            files[field_name] = FormFile(disposition["filename"], content_type, content)
        else:
            form.setdefault(field_name, []).append(content.decode("utf-8", "replace"))
    return form, files


def _disposition_parameters(disposition: str) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for parameter in disposition.split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        parameters[name.strip().lower()] = value
    return parameters


def _record(
    method: str, path: str, headers: dict[str, str], body: bytes, certificate: bytes | None = None
) -> RecordedRequest:
    form: dict[str, list[str]] = {}
    files: dict[str, FormFile] = {}
    parsed: Any = None
    kind = media_type(headers)
    if kind == "application/x-www-form-urlencoded":
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    elif kind == "application/json":
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    elif kind == "multipart/form-data":
        boundary = _multipart_boundary(headers.get("content-type", ""))
        if boundary is not None:
            form, files = _parse_multipart(body, boundary)
    return RecordedRequest(method, path, headers, body, form, parsed, files, certificate)


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive handler; Nagle off and a buffered writer so a response leaves in one segment."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    server: _HTTPServer

    def setup(self) -> None:
        # TLS: the handshake runs here, in the connection's own thread, not in the accepting one.
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging: it is noise in test output and slows benchmarks."""

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline().split(b";", 1)[0].strip(), 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self._write(json_response(400, {"error": "invalid_request"}, {"Connection": "close"}))
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        certificate = None
        if isinstance(self.connection, ssl.SSLSocket):
            certificate = self.connection.getpeercert(binary_form=True)
        self._write(self.server.respond(_record(self.command, self.path, headers, body, certificate)))

    def _write(self, response: Response) -> None:
        if response.reset:
            self.server.reset_on_close(self.connection)
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.chunks is None:
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in response.chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class _HTTPServer(ThreadingHTTPServer):
    """Tracks open connections so ``close()`` can end idle keep-alive threads instead of hanging."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self, respond: Callable[[RecordedRequest], Response], closing: threading.Event, port: int
    ) -> None:
        self.respond = respond
        self.closing = closing
        self._connections_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._to_reset: set[socket.socket] = set()
        self._handler_threads: list[threading.Thread] = []
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall for seconds.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        with self._connections_lock:
            self._connections.add(connection)
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn never joins daemon threads; track them so server_close() can.
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=self.daemon_threads
        )
        with self._connections_lock:
            self._handler_threads = [alive for alive in self._handler_threads if alive.is_alive()]
            self._handler_threads.append(thread)
        thread.start()

    def server_close(self) -> None:
        super().server_close()
        with self._connections_lock:
            threads, self._handler_threads = self._handler_threads, []
        for thread in threads:
            thread.join()

    def reset_on_close(self, connection: socket.socket) -> None:
        with self._connections_lock:
            self._to_reset.add(connection)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
            reset = request in self._to_reset
            self._to_reset.discard(request)
        if reset:
            request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            request.close()
        else:
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up, and close() cutting requests short, are expected in tests.
        if not self.closing.is_set() and not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)


class LoopbackServer:
    """Base for the test servers: binds 127.0.0.1 on ``port`` (0: a free one) in a daemon thread.

    With ``tls`` (a server ``ssl.SSLContext``, set before ``start``) it serves HTTPS, and each
    request records the client certificate presented (``RecordedRequest.client_certificate``).
    """

    def __init__(self, *, port: int = 0) -> None:
        self.port = port
        self.tls: ssl.SSLContext | None = None
        self._plain_socket: socket.socket | None = None
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()
        self._closing = threading.Event()

    def respond(self, request: RecordedRequest) -> Response:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; only valid while started."""
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        scheme = "https" if self._plain_socket is not None else "http"
        return f"{scheme}://127.0.0.1:{self._httpd.server_port}"

    def start(self: _S) -> _S:
        """Start serving (no-op when already running); returns ``self``."""
        with self._lifecycle_lock:
            if self._httpd is None:
                self._closing.clear()
                self._httpd = _HTTPServer(self.respond, self._closing, self.port)
                if self.tls is not None:
                    # The serving loop keeps polling the plain descriptor; a duplicate wrapped in TLS
                    # accepts. The handshake waits for the connection's thread (_Handler.setup).
                    self._plain_socket = self._httpd.socket
                    listener = socket.socket(fileno=os.dup(self._plain_socket.fileno()))
                    self._httpd.socket = self.tls.wrap_socket(
                        listener, server_side=True, do_handshake_on_connect=False
                    )
                # A short poll interval keeps close() fast: shutdown() waits for the next poll.
                self._thread = threading.Thread(
                    target=self._httpd.serve_forever,
                    kwargs={"poll_interval": 0.01},
                    name=f"{type(self).__name__}-{self._httpd.server_port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, cut keep-alive connections and join every server thread."""
        with self._lifecycle_lock:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
            if httpd is None or thread is None:
                return
            self._closing.set()  # wakes handlers sleeping in an injected delay
            httpd.shutdown()
            httpd.drop_connections()
            httpd.server_close()  # joins the handler threads
            thread.join()
            if self._plain_socket is not None:
                self._plain_socket.close()
                self._plain_socket = None

    def sleep(self, seconds: float) -> None:
        """Sleep that ``close()`` interrupts (aborting the request), so a delay never blocks shutdown."""
        if seconds > 0 and self._closing.wait(seconds):
            raise ConnectionAbortedError("server closed")

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
