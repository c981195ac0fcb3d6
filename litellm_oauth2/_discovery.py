"""Authorization server metadata (RFC 8414, OpenID Connect Discovery): the token endpoint of an ``issuer``.

The metadata is fetched once per process and issuer, whichever provider asks first; the token
client does the HTTP (its timeout, retries and no-redirect rule apply); this module says where
to look and what a document must hold to be trusted: its ``issuer`` equal to the configured one
(RFC 8414 §3.3, so a document cannot name another server's endpoints), and an endpoint URL
allowed by the same rules as a configured ``token_url``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ._fork import reset_in_forked_child

__all__ = ["METADATA", "MetadataCache", "metadata_urls", "token_endpoint_of"]


def metadata_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may be, in the order tried: OpenID Connect's location
    (the path appended), then RFC 8414 §3.1's (the well-known segment inserted before the path)."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    return [
        f"{origin}{path}/.well-known/openid-configuration",
        f"{origin}/.well-known/oauth-authorization-server{path}",
    ]


def token_endpoint_of(document: dict[str, Any], issuer: str, *, mtls: bool) -> str:
    """The token endpoint a metadata document names; for mTLS its ``mtls_endpoint_aliases`` one
    (RFC 8705 §5) when given.

    Raises:
        ValueError: the document's ``issuer`` differs from ``issuer``, or it names no token endpoint;
            the message says which.
    """
    if document.get("issuer") != issuer:
        raise ValueError("its 'issuer' differs from the configured issuer (RFC 8414 §3.3)")
    aliases = document.get("mtls_endpoint_aliases")
    if mtls and isinstance(aliases, dict) and isinstance(aliases.get("token_endpoint"), str):
        return str(aliases["token_endpoint"])
    endpoint = document.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise ValueError("it names no token_endpoint")
    return endpoint


class MetadataCache:
    """Metadata documents by issuer, each fetched once; concurrent askers wait for the one fetch."""

    def __init__(self) -> None:
        self._documents: dict[tuple[str, str], dict[str, Any]] = {}
        self._after_fork_in_child()
        reset_in_forked_child(self)

    def _after_fork_in_child(self) -> None:
        """The parent's fetching threads do not exist in a child: its locks start free."""
        self._lock = threading.Lock()
        self._fetching: dict[tuple[str, str], threading.Lock] = {}

    def get(self, issuer: str, trust: str, fetch: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The document of ``issuer`` as trusted through ``trust`` (the CA setting), fetching it
        with ``fetch`` the first time; what ``fetch`` raises is raised and nothing is kept."""
        key = (issuer, trust)
        with self._lock:
            document = self._documents.get(key)
            if document is not None:
                return document
            fetching = self._fetching.setdefault(key, threading.Lock())
        # Bounded: the holder's fetch is bounded by its timeout and retries.
        with fetching:
            with self._lock:
                document = self._documents.get(key)
            if document is None:
                document = fetch()
                with self._lock:
                    self._documents[key] = document
        return document

    def clear(self) -> None:
        """Forget every document (tests; a process whose issuer moved)."""
        with self._lock:
            self._documents.clear()


METADATA = MetadataCache()
