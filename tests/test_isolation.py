"""Tests do not hand each other tokens through the process-wide token store.

The in-memory store is keyed by token URL and client, as it should be for one process talking to
real identity providers. In a test run a new ``TokenServer`` can get the loopback port of an
earlier, closed one, so the same key would name a token signed by a server that no longer
exists. The two tests below run in file order and reproduce exactly that.
"""

from __future__ import annotations

from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import TokenCache
from litellm_oauth2.testing import TokenServer

_FIRST_PORT: list[int] = []


def _fetch(server: TokenServer) -> str:
    cache = TokenCache(config_of({"idp": provider_dict(server.token_url)}))
    try:
        return cache.get_token("idp")
    finally:
        cache.close()


def test_first_server_issues_a_token() -> None:
    with TokenServer(key_type="EC") as first:
        first.add_client("test-client", SECRET)
        assert first.verify_access_token(_fetch(first)) is not None
        _FIRST_PORT.append(int(first.url.rsplit(":", 1)[1]))


def test_a_new_server_on_the_same_port_is_asked_for_its_own_token() -> None:
    with TokenServer(key_type="EC", port=_FIRST_PORT[-1] if _FIRST_PORT else 0) as second:
        second.add_client("test-client", SECRET)
        token = _fetch(second)
        assert second.token_requests == 1 and second.verify_access_token(token) is not None
