"""A forked worker never shares the parent's keep-alive connection to the gateway.

gunicorn ``--preload`` and multiprocessing's ``fork`` start method copy a process whose OAuth2
provider already holds an HTTP client with a pooled connection. Real ``os.fork()`` and
``multiprocessing`` processes call a loopback gateway that records which client connection
(source port) each request came on and echoes the caller's marker back.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2.testing import TokenServer

CHILD_TIMEOUT = 60.0
# Long enough that the parent's and the child's requests overlap at the gateway.
GATEWAY_DELAY = 0.3


@dataclass(frozen=True)
class _Seen:
    marker: str
    port: int


class _RecordingGateway(ThreadingHTTPServer):
    """Answers chat completions with ``echo <marker>`` and records each request's client port."""

    daemon_threads = True

    def __init__(self) -> None:
        self.seen: list[_Seen] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _EchoHandler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def port_of(self, marker: str) -> int:
        with self.lock:
            ports = [seen.port for seen in self.seen if seen.marker == marker]
        assert len(ports) == 1, (marker, self.seen)
        return ports[0]


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RecordingGateway

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        marker = str(body["messages"][-1]["content"])
        with self.server.lock:
            self.server.seen.append(_Seen(marker, self.client_address[1]))
        time.sleep(GATEWAY_DELAY)
        message = {"role": "assistant", "content": f"echo {marker}"}
        reply = json.dumps(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": "m",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def gateway() -> Iterator[_RecordingGateway]:
    server = _RecordingGateway()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def handler(gateway: _RecordingGateway) -> Iterator[OAuth2Handler]:
    with TokenServer() as tokens:
        tokens.add_client("test-client", SECRET)
        settings = provider_dict(tokens.token_url, api_base=gateway.base_url)
        oauth2 = OAuth2Handler(config=config_of({"fk": settings}))
        try:
            yield oauth2
        finally:
            oauth2.close()


def _ask(marker: str) -> str:
    reply = litellm.completion(model="fk/m", messages=[{"role": "user", "content": marker}])
    return str(reply.choices[0].message.content)


def _child_call(send: Callable[[str], Any]) -> None:
    try:
        send(_ask("child"))
    except BaseException as exc:  # reported to the parent
        send(f"raised {exc!r}")


def _run_in_os_fork() -> str:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one call, its answer down the pipe, and out
        code = 0
        try:
            os.close(read_end)
            _child_call(lambda text: os.write(write_end, text.encode()))
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        parent = _ask("parent")
        deadline = time.monotonic() + CHILD_TIMEOUT
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("the forked child did not finish")
            time.sleep(0.01)
        child = os.read(read_end, 65536).decode()
    finally:
        os.close(read_end)
    assert parent == "echo parent"
    return child


def _run_in_multiprocessing_fork() -> str:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child_call, args=(sender.send,), daemon=True)
    process.start()
    try:
        parent = _ask("parent")
        assert receiver.poll(CHILD_TIMEOUT), "the multiprocessing child sent nothing"
        child = str(receiver.recv())
    finally:
        process.join(CHILD_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(CHILD_TIMEOUT)
    assert parent == "echo parent"
    return child


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
@pytest.mark.parametrize(
    "start", [_run_in_os_fork, _run_in_multiprocessing_fork], ids=["os.fork", "multiprocessing"]
)
def test_a_forked_child_opens_its_own_gateway_connection(
    gateway: _RecordingGateway, handler: OAuth2Handler, start: Callable[[], str]
) -> None:
    assert _ask("warm-up") == "echo warm-up"  # the parent now holds a pooled keep-alive connection

    child = start()

    assert child == "echo child"
    warm, parent_port, child_port = (gateway.port_of(m) for m in ("warm-up", "parent", "child"))
    assert child_port not in (warm, parent_port), "the child sent on the parent's connection"
