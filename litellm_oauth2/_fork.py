"""What a forked child must not inherit: locks held by the parent's threads, their fetches, its connections.

Objects with such state register here (weakly, so registration never keeps them alive); after
``os.fork()`` (gunicorn ``--preload``, ``multiprocessing`` with the 'fork' start method) the child
calls each one's ``_after_fork_in_child`` before any of its code runs. Only the forking thread
exists in the child, so the hooks run alone and must not wait on anything.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol

__all__ = ["reset_in_forked_child"]


class _ForkSensitive(Protocol):
    def _after_fork_in_child(self) -> None: ...


_registered: weakref.WeakSet[_ForkSensitive] = weakref.WeakSet()


def reset_in_forked_child(obj: _ForkSensitive) -> None:
    """Have ``obj._after_fork_in_child()`` called in every child forked from now on."""
    _registered.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_registered):
        obj._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
