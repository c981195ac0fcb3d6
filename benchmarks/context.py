"""What every benchmark gets: the servers, the size preset, fresh client ids and a progress log."""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field

from .peers import SECRET
from .servers import Servers


@dataclass
class Context:
    servers: Servers
    quick: bool
    started: float = field(default_factory=time.monotonic)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def client_id(self, label: str) -> str:
        """A new OAuth2 client registered with the token server (its requests are counted apart)."""
        client_id = f"{label}-{next(self._ids)}"
        self.servers.add_client(client_id, SECRET)
        return client_id

    def log(self, message: str) -> None:
        """Progress on stderr (stdout carries only the final Markdown)."""
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.__stderr__, flush=True)
