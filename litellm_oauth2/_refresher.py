"""One long-lived thread per token identity that runs its token requests, woken by an event.

Starting a thread costs the starting caller a wait until the new thread runs: a couple of
milliseconds on a loaded machine, paid by whichever request opens a refresh window. So the
thread is started once, by the first cold fetch (a caller that waits for the identity provider
anyway), and later fetches are handed to it by setting an event. It is a daemon: interpreter exit
never waits for it. It ends on ``stop()`` (``TokenCache.close()``), and on its own when nothing
refers to its ``Refresher`` any more (it holds only a weak reference between jobs, and wakes at
least every ``IDLE_CHECK_SECONDS``). A forked child has no such thread: ``_after_fork_in_child``
forgets the parent's, and the child's first job starts its own.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable

from ._fork import reset_in_forked_child

__all__ = ["IDLE_CHECK_SECONDS", "Refresher"]

IDLE_CHECK_SECONDS = 60.0


class _Run:
    """One started thread's state: its wake-up event, its queue, whether it must end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.jobs: deque[Callable[[], None]] = deque()
        self.stopped = False
        self.thread: threading.Thread | None = None

    def take(self) -> Callable[[], None] | None:
        with self.lock:
            self.wake.clear()
            return self.jobs.popleft() if self.jobs else None


def _serve(owner: weakref.ref[Refresher], run: _Run) -> None:
    while True:
        run.wake.wait(IDLE_CHECK_SECONDS)
        while (job := run.take()) is not None:
            job()
            del job  # a finished job keeps nothing (the cache, a future) alive while idle
        if run.stopped or owner() is None:  # jobs queued before the stop have run
            return


class Refresher:
    """Runs jobs one after another in one daemon thread, started on the first job, stopped by ``stop``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._run: _Run | None = None
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        """The parent's thread does not exist here, and its locks may be held: start afresh on demand."""
        self._lock = threading.Lock()
        self._run = None

    def __repr__(self) -> str:
        return f"Refresher(name={self.name!r}, running={self.running})"

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and run.thread is not None and run.thread.is_alive()

    def start(self) -> None:
        """Start the thread unless it runs; raises ``RuntimeError`` when no thread can start (a pids limit)."""
        with self._lock:
            self._current()

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` and wake the thread (starting it if needed); raises ``RuntimeError`` as ``start``."""
        with self._lock:  # never into a run that ``stop`` has already let go
            run = self._current()
            with run.lock:
                run.jobs.append(job)
                run.wake.set()

    def stop(self, timeout: float) -> None:
        """End the thread once its queued jobs are done (their callers wait for them), waiting at
        most ``timeout``; a later job starts a new thread."""
        with self._lock:
            run, self._run = self._run, None
        if run is None:
            return
        with run.lock:
            run.stopped = True
            run.wake.set()
        if run.thread is not None and run.thread is not threading.current_thread():
            run.thread.join(timeout)

    def _current(self) -> _Run:
        """The running thread's state, starting one if none runs (called with ``_lock`` held)."""
        run = self._run
        if run is not None and run.thread is not None and run.thread.is_alive():
            return run
        run = _Run()
        run.thread = threading.Thread(
            target=_serve, args=(weakref.ref(self), run), name=self.name, daemon=True
        )
        run.thread.start()  # RuntimeError: nothing is kept, the next job tries again
        self._run = run
        return run
