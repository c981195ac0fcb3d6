"""A real ``redis-server`` (from the OS packages) on a free loopback port, and worker processes using it.

``RedisServer`` runs one ``redis-server`` that tests can stop and restart on the same port.
``PROCESSES`` starts workers from a fresh, single-threaded interpreter (the 'forkserver' method,
with this module preloaded so each worker starts in milliseconds); each worker builds its own
``TokenCache`` from a pickled config, so it shares tokens with the others only through Redis.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from types import TracebackType
from typing import Any

import redis

from litellm_oauth2.cache import TokenCache
from litellm_oauth2.config import OAuth2Config, RedisCacheSettings
from litellm_oauth2.redis_store import RedisTokenStore

STARTUP_SECONDS = 10.0

PROCESSES = multiprocessing.get_context("forkserver")
PROCESSES.set_forkserver_preload([__name__])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` without persistence on 127.0.0.1; ``stop``/``start`` keep the same port (and URL)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = 0
        self._dir = tempfile.TemporaryDirectory(prefix="litellm-oauth2-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        """Start on the port used before, or on a new free port the first time."""
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            self._process = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._dir.name,
                    "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return
            self.stop()
            self.port = 0  # taken meanwhile by someone else: try another one
        raise RuntimeError("redis-server did not start")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- worker processes -------------------------------------------------------------------------


def make_store(config: OAuth2Config, **options: Any) -> RedisTokenStore:
    assert isinstance(config.cache, RedisCacheSettings)
    return RedisTokenStore(config.cache, **options)


def stampede_process(
    config: OAuth2Config, barrier: Any, callers: int, results: multiprocessing.Queue[Any]
) -> None:
    try:
        cache = TokenCache(config)
        assert isinstance(cache._store, RedisTokenStore)
        tokens: list[str] = []
        errors: list[str] = []
        start = threading.Barrier(callers + 1)

        def caller() -> None:
            start.wait()
            try:
                tokens.append(cache.get_token("idp"))
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for thread in threads:
            thread.start()
        barrier.wait(timeout=60)  # every process ready: release all callers together
        start.wait()
        for thread in threads:
            thread.join(timeout=60)
        results.put((tokens, errors))
    except BaseException as exc:
        results.put(([], [repr(exc)]))


def load_process(
    config: OAuth2Config, barrier: Any, duration: float, threads: int, results: multiprocessing.Queue[Any]
) -> None:
    try:
        cache = TokenCache(config)
        seen: set[str] = set()
        errors: list[str] = []
        calls = [0]
        barrier.wait(timeout=60)
        stop = time.monotonic() + duration

        def worker() -> None:
            while time.monotonic() < stop:
                try:
                    seen.add(cache.get_token("idp"))
                    calls[0] += 1
                except Exception as exc:
                    errors.append(repr(exc))
                time.sleep(0.005)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        results.put((sorted(seen), errors, calls[0], cache.stats("idp").fetches))
    except BaseException as exc:
        results.put(([], [repr(exc)], 0, 0))


def lock_holder_process(config: OAuth2Config, lease: float) -> None:
    cache = TokenCache(config, store=make_store(config, lock_lease_seconds=lease))
    cache.get_token("idp")  # the token server holds this request until the process is killed


def collect(results: multiprocessing.Queue[Any], processes: list[Any], timeout: float = 60) -> list[Any]:
    collected = []
    deadline = time.monotonic() + timeout
    for _ in processes:
        collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    for process in processes:
        process.join(timeout=10)
    return collected
