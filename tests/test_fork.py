"""A forked child starts clean: no inherited fetch, lock or keep-alive connection, with real fork().

Each child reports through a pipe and is killed if it has not answered within the bound, so a
child that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SECRET, config_of, provider_dict
from redis_server import RedisServer, make_store

from litellm_oauth2 import TokenCache
from litellm_oauth2.cache import InMemoryTokenStore, TokenStore
from litellm_oauth2.testing import TokenServer
from litellm_oauth2.testing._http import RecordedRequest, Response

CHILD_SECONDS = 30.0  # bound on a child's answer; never reached unless the child hangs


class ConnectionRecordingServer(TokenServer):
    """Records, per token request, the handler thread, which is one per TCP connection."""

    def __init__(self) -> None:
        super().__init__(token_lifetime=300)
        self.connections: list[threading.Thread] = []

    def respond(self, request: RecordedRequest) -> Response:
        if request.path == "/token":
            self.connections.append(threading.current_thread())
        return super().respond(request)


@pytest.fixture
def server() -> Iterator[ConnectionRecordingServer]:
    with ConnectionRecordingServer() as srv:
        srv.add_client("test-client", SECRET)
        yield srv


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    try:
        with RedisServer() as running:
            yield running
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def run_in_child(work: Any) -> str:
    """Fork; the child runs ``work()`` and writes its string result (or error) to a pipe."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        try:
            answer = "ok " + str(work())
        except BaseException as exc:
            answer = f"error {exc!r}"
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], CHILD_SECONDS)
        answer = os.read(read_end, 65536).decode() if ready else "hung"
    finally:
        os.close(read_end)
        if answer == "hung":
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return answer


@pytest.mark.parametrize("store_kind", ["process", "redis"])
def test_fork_while_a_fetch_is_in_flight_the_child_fetches_its_own(
    server: ConnectionRecordingServer, store_kind: str, request: pytest.FixtureRequest
) -> None:
    providers = {"idp": provider_dict(server.token_url)}
    if store_kind == "redis":
        redis_server = request.getfixturevalue("redis_server")
        config = config_of(providers, cache={"type": "redis", "url": redis_server.url})
        store: TokenStore = make_store(config)
    else:
        config = config_of(providers)
        store = InMemoryTokenStore()
    cache = TokenCache(config, store=store)
    server.delay_next(1, 3.0)
    parent_fetch = threading.Thread(target=cache.get_token, args=("idp",), daemon=True)
    parent_fetch.start()
    deadline = time.monotonic() + CHILD_SECONDS
    while server.token_requests == 0:
        assert time.monotonic() < deadline, "the parent's fetch never reached the token server"
        time.sleep(0.005)

    answer = run_in_child(lambda: cache.get_token("idp"))

    assert answer.startswith("ok "), f"the child did not get a token: {answer}"
    assert server.verify_access_token(answer.removeprefix("ok ")) is not None
    parent_fetch.join(CHILD_SECONDS)
    # Through Redis the child waits for the parent's token instead of asking again.
    assert server.token_requests == (1 if store_kind == "redis" else 2)


def _child_fetch(cache: TokenCache, results: Any) -> None:
    try:
        cache.invalidate("idp")
        results.put("ok " + cache.get_token("idp"))
    except BaseException as exc:
        results.put(f"error {exc!r}")


def test_forked_workers_never_share_the_token_endpoint_connection(server: ConnectionRecordingServer) -> None:
    cache = TokenCache(config_of({"idp": provider_dict(server.token_url)}), store=InMemoryTokenStore())
    cache.get_token("idp")  # warm-up: the parent now holds a keep-alive connection
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    worker = context.Process(target=_child_fetch, args=(cache, results))
    worker.start()
    try:
        answer = results.get(timeout=CHILD_SECONDS)
    finally:
        worker.join(CHILD_SECONDS)
        if worker.is_alive():
            worker.kill()
            worker.join(CHILD_SECONDS)
    assert answer.startswith("ok "), answer
    cache.invalidate("idp")
    cache.get_token("idp")  # the parent again, after the child
    warm_up, child, parent = server.connections
    assert child is not warm_up, "the child sent its token request over the parent's connection"
    assert parent is warm_up, "the parent lost its own keep-alive connection"
