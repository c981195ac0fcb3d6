"""When a mounted credential file has changed: cert-manager and the kubelet replace files in place.

A Kubernetes secret volume swaps a symlink, so the file reached by the same path has another
inode; other tools rewrite it (another size or modification time). Stat'ing costs microseconds,
so callers compare before each use rather than run a watcher thread.
"""

from __future__ import annotations

import os

__all__ = ["FileStates", "file_states"]

FileStates = tuple[tuple[int, int, int], ...]
"""Inode, size and modification time (ns) of each file, in the order given."""


def file_states(paths: tuple[str, ...]) -> FileStates:
    """The state of each file (symlinks followed); zeros for a file that cannot be stat'ed now
    (whoever reads it next reports why)."""
    states = []
    for path in paths:
        try:
            info = os.stat(path)
        except (OSError, ValueError):  # ValueError: a NUL in the path
            states.append((0, 0, 0))
        else:
            states.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(states)
