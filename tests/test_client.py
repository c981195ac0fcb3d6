"""The token client against the real loopback token server: wire format, validation, retries."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import jwt
import pytest
from helpers import SECRET, config_of, ec_key_pair, provider, provider_dict, rsa_key_pair

from litellm_oauth2 import OAuth2AuthenticationError, OAuth2ConfigurationError, TokenCache
from litellm_oauth2.cache import InMemoryTokenStore
from litellm_oauth2.client import TokenClient, _basic_authorization, _parse_retry_after, jwt_lifetime
from litellm_oauth2.testing import TokenServer
from litellm_oauth2.testing._http import LoopbackServer, RecordedRequest, Response
from litellm_oauth2.testing.token_server import ReplayResponse


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("test-client", SECRET)
        yield srv


def fetch(server: TokenServer, **overrides: object) -> str:
    token = TokenClient(provider(server.token_url, **overrides)).fetch()
    return token.access_token.get_secret_value()


def last_form(server: TokenServer) -> dict[str, list[str]]:
    return server.requests[-1].form


# -- client authentication on the wire ---------------------------------------------------------


def test_basic_auth_is_rfc6749_form_encoded(server: TokenServer) -> None:
    access_token = fetch(server, scope="chat.read chat.write")
    request = server.requests[-1]
    expected = base64.b64encode(f"test-client:{quote(SECRET, safe='')}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.body == b"grant_type=client_credentials&scope=chat.read+chat.write"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    assert server.verify_access_token(access_token)["scope"] == "chat.read chat.write"


def test_basic_auth_raw_switch_sends_unencoded_credentials(server: TokenServer) -> None:
    fetch(server, basic_auth_encoding="raw")
    expected = base64.b64encode(f"test-client:{SECRET}".encode()).decode()
    assert server.requests[-1].headers["authorization"] == f"Basic {expected}"


def test_client_secret_post_puts_credentials_in_body_only(server: TokenServer) -> None:
    fetch(server, token_endpoint_auth_method="client_secret_post")
    request = server.requests[-1]
    assert "authorization" not in request.headers
    assert request.body == (
        b"grant_type=client_credentials&client_id=test-client&client_secret=" + quote_plus(SECRET).encode()
    )


@pytest.mark.parametrize(("algorithm", "key_pair"), [("RS256", rsa_key_pair), ("ES256", ec_key_pair)])
def test_private_key_jwt_assertion(server: TokenServer, algorithm: str, key_pair: object) -> None:
    assert callable(key_pair)
    private, public = key_pair()
    server.add_client("jwt-client", public_key_pem=public)
    settings = dict(
        client_id="jwt-client",
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key=private,
        signing_algorithm=algorithm,
        key_id="key-1",
    )
    fetch(server, **settings)
    fetch(server, **settings)
    forms = [r.form for r in server.requests[-2:]]
    assertions = [form["client_assertion"][0] for form in forms]
    assert forms[0]["client_assertion_type"] == ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]
    assert forms[0]["client_id"] == ["jwt-client"]
    assert "client_secret" not in forms[0] and "authorization" not in server.requests[-1].headers
    header = jwt.get_unverified_header(assertions[0])
    assert header["alg"] == algorithm and header["kid"] == "key-1"
    claims = [jwt.decode(a, public, algorithms=[algorithm], audience=server.token_url) for a in assertions]
    assert claims[0]["iss"] == claims[0]["sub"] == "jwt-client"
    assert 0 < claims[0]["exp"] - claims[0]["iat"] <= 300
    assert claims[0]["jti"] != claims[1]["jti"]


def test_private_key_jwt_bad_keys_are_configuration_errors(server: TokenServer) -> None:
    rsa_private, _ = rsa_key_pair()
    cases = {
        "not a key": "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        "wrong type": rsa_private,
    }
    for label, pem in cases.items():
        algorithm = "ES256" if label == "wrong type" else "RS256"
        settings = provider(
            server.token_url,
            client_secret=None,
            token_endpoint_auth_method="private_key_jwt",
            private_key=pem,
            signing_algorithm=algorithm,
        )
        with pytest.raises(OAuth2ConfigurationError) as info:
            TokenClient(settings)
        assert "idp_test" in str(info.value) and "private_key" in str(info.value), label
        assert pem not in str(info.value)


def test_private_key_path_unreadable_names_provider_and_field(server: TokenServer, tmp_path: object) -> None:
    settings = provider(
        server.token_url,
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key_path="/nonexistent/key.pem",
    )
    with pytest.raises(OAuth2ConfigurationError, match=r"idp_test.*private_key_path"):
        TokenClient(settings)


def test_audience_repeated_resource_and_extra_params_on_the_wire(server: TokenServer) -> None:
    fetch(
        server,
        audience="https://llm.example.com",
        resource=["https://a.example.com/v1", "https://b.example.com"],
        extra_token_params={"tenant": "blue"},
        scope="x",
    )
    form = last_form(server)
    assert form["audience"] == ["https://llm.example.com"]
    assert form["resource"] == ["https://a.example.com/v1", "https://b.example.com"]
    assert form["tenant"] == ["blue"]
    assert all(len(values) == 1 for name, values in form.items() if name != "resource")
    assert all(value for values in form.values() for value in values)


def test_refresh_token_grant_rotates_the_refresh_token(server: TokenServer) -> None:
    server.add_client("rt-client", SECRET, refresh_token="rt-initial", rotate_refresh_token=True)
    client = TokenClient(provider(server.token_url, client_id="rt-client", refresh_token="rt-initial"))
    first = client.fetch()
    second = client.fetch()
    forms = [r.form for r in server.requests[-2:]]
    assert forms[0]["grant_type"] == ["refresh_token"] and forms[0]["refresh_token"] == ["rt-initial"]
    assert first.refresh_token is not None
    assert forms[1]["refresh_token"] == [first.refresh_token.get_secret_value()]
    assert second.refresh_token is not None and second.refresh_token != first.refresh_token


# -- response validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("non_json", "not a JSON object"),
        ("json_array", "not a JSON object"),
        ("missing_access_token", "no access_token"),
        ("empty_token", "no access_token"),
        ("missing_token_type", "token_type"),
        ("wrong_token_type", "'mac', not 'Bearer'"),
        ("huge", "larger than"),
        ("newline_token", "not allowed in an HTTP header"),
        ("negative_expires_in", "positive number"),
    ],
)
def test_invalid_token_responses_are_refused_without_retry(
    server: TokenServer, kind: str, message: str
) -> None:
    server.malform_next(1, kind)
    with pytest.raises(OAuth2AuthenticationError, match=message) as info:
        fetch(server)
    assert "idp_test" in str(info.value) and info.value.provider == "idp_test"
    assert server.token_requests == 1


def test_expires_in_as_string_and_missing(server: TokenServer) -> None:
    server.token_lifetime = 120
    server.malform_next(1, "string_expires_in")
    client = TokenClient(provider(server.token_url, default_expires_in=77))
    assert 119 < client.fetch().lifetime <= 120
    server.malform_next(1, "no_expires_in")
    jwt_lifetime = client.fetch().lifetime
    assert 100 < jwt_lifetime <= 121
    server.malform_next(1, "no_expires_in_opaque")
    assert client.fetch().lifetime == 77


def test_expiry_counts_from_when_the_request_was_sent(server: TokenServer) -> None:
    server.token_lifetime = 60
    server.delay_next(1, 0.3)
    before = time.monotonic()
    token = TokenClient(provider(server.token_url)).fetch()
    assert token.expires_at - before <= 60.05


def claims_of(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return claims


def test_a_jwt_exp_earlier_than_expires_in_bounds_the_lifetime(server: TokenServer) -> None:
    server.token_lifetime, server.exp_lifetime = 3600, 60
    token = TokenClient(provider(server.token_url)).fetch()
    exp = claims_of(token.access_token.get_secret_value())["exp"]
    assert isinstance(exp, int) and token.expires_at_wall <= exp
    assert 58 <= token.lifetime <= 60


def test_whole_second_iat_and_exp_never_make_a_token_outlive_its_jwt(server: TokenServer) -> None:
    """A server writing ``iat = int(now)`` and ``exp = iat + 3`` with ``expires_in: 3`` issued the
    token up to a second after ``iat``: counting 3 s from the request would pass ``exp``."""
    server.token_lifetime, server.exp_lifetime = 3, 3
    client = TokenClient(provider(server.token_url))
    for _ in range(5):
        token = client.fetch()
        exp = claims_of(token.access_token.get_secret_value())["exp"]
        assert isinstance(exp, int) and token.expires_at_wall <= exp + 1e-6, (token.expires_at_wall, exp)
        assert 2 <= token.lifetime <= 3


def test_a_cached_token_is_never_served_past_its_jwt_exp(server: TokenServer) -> None:
    """What a JWT-verifying gateway sees: after an idle spell past ``exp``, the next call gets a
    token the server still accepts, not the one ``expires_in`` would still call fresh."""
    server.token_lifetime, server.exp_lifetime = 60, 3
    cache = TokenCache(config_of({"idp": provider_dict(server.token_url)}), store=InMemoryTokenStore())
    first = cache.get_token("idp")
    exp = claims_of(first)["exp"]
    assert isinstance(exp, int)
    time.sleep(max(0.0, exp - time.time()) + 0.2)
    served = cache.get_token("idp")
    assert server.verify_access_token(served) is not None, "served a token past its exp"
    assert server.token_requests == 2


def replay_jwt(server: TokenServer, claims: dict[str, object], expires_in: float) -> None:
    token = jwt.encode(claims, "k" * 32, algorithm="HS256")
    body = json.dumps({"access_token": token, "token_type": "Bearer", "expires_in": expires_in})
    server.replay_next(ReplayResponse(headers=(("Content-Type", "application/json"),), body=body.encode()))


@pytest.mark.parametrize("skew", [-600, 600])
def test_with_iat_the_jwt_lifetime_is_counted_on_the_servers_clock(server: TokenServer, skew: int) -> None:
    """A token server whose clock is ten minutes off ours: ``exp - iat`` is what the token lasts,
    whatever this machine's clock says (an ``exp`` "in the past" here is no reason to fail)."""
    iat = int(time.time()) + skew
    replay_jwt(server, {"iat": iat, "exp": iat + 120}, expires_in=300)
    token = TokenClient(provider(server.token_url)).fetch()
    assert 119 <= token.lifetime <= 120


def test_without_iat_the_jwt_exp_is_counted_from_now(server: TokenServer) -> None:
    replay_jwt(server, {"exp": time.time() + 100.5}, expires_in=300)
    token = TokenClient(provider(server.token_url)).fetch()
    assert 99 <= token.lifetime <= 100.5


# -- errors and retries ------------------------------------------------------------------------


def test_two_503_then_success_makes_three_requests(server: TokenServer) -> None:
    server.fail_next(2, status=503)
    assert fetch(server)
    assert server.token_requests == 3


@pytest.mark.parametrize(
    "error", ["invalid_client", "invalid_grant", "invalid_scope", "unauthorized_client", "invalid_request"]
)
def test_permanent_errors_are_not_retried(server: TokenServer, error: str) -> None:
    server.fail_next(
        1, status=400 if error != "invalid_client" else 401, error=error, error_description="nope"
    )
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server)
    assert server.token_requests == 1
    assert info.value.error == error and info.value.error_description == "nope"
    assert error in str(info.value) and "nope" in str(info.value) and "idp_test" in str(info.value)
    assert info.value.transient is False, "a Router would retry it"


@pytest.mark.parametrize(
    ("fault", "transient"),
    [
        (lambda s: s.fail_next(10, status=503), True),
        (lambda s: s.reset_connection_next(10), True),
        (lambda s: s.malform_next(1, "non_json"), False),
        (lambda s: s.redirect_next(1, location="/token/", status=301), False),
    ],
    ids=["503", "reset", "invalid-response", "redirect"],
)
def test_what_the_client_retries_is_what_it_calls_transient(
    server: TokenServer, fault: Any, transient: bool
) -> None:
    fault(server)
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server)
    assert info.value.transient is transient
    assert server.token_requests == (4 if transient else 1)  # FAST_RETRY: 3 retries


def test_wrong_secret_gets_invalid_client_once(server: TokenServer) -> None:
    with pytest.raises(OAuth2AuthenticationError, match="invalid_client") as info:
        fetch(server, client_secret="wrong-secret")
    assert info.value.http_status == 401 and server.token_requests == 1
    assert "wrong-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"), [(400, "temporarily_unavailable"), (500, "server_error"), (429, None)]
)
def test_transient_errors_are_retried(server: TokenServer, status: int, error: str | None) -> None:
    server.fail_next(1, status=status, error=error)
    assert fetch(server)
    assert server.token_requests == 2


def test_retries_exhausted_raise_with_original_error(server: TokenServer) -> None:
    server.fail_next(10, status=502)
    with pytest.raises(OAuth2AuthenticationError, match="gave up after 4 attempts") as info:
        fetch(server)
    assert server.token_requests == 4
    assert info.value.http_status == 502 and info.value.original_error is not None


def test_retry_after_is_honoured_and_capped(server: TokenServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    server.fail_next(1, status=429, headers={"Retry-After": "0"})
    server.fail_next(1, status=503, headers={"Retry-After": "3600"})
    assert fetch(server, retry={"attempts": 3, "initial_delay": 0.2, "max_delay": 0.3})
    waits = [record.getMessage().split("retrying in ")[1].split(" s")[0] for record in caplog.records]
    assert waits == ["0.00", "0.30"]
    assert all("attempt" in r.getMessage() and "idp_test" in r.getMessage() for r in caplog.records)


def test_retry_schedule_is_exponential(server: TokenServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="litellm_oauth2")
    server.fail_next(3, status=503)
    assert fetch(server, retry={"attempts": 3, "initial_delay": 0.01, "max_delay": 1})
    waits = [record.getMessage().split("retrying in ")[1].split(" s")[0] for record in caplog.records]
    assert waits == ["0.01", "0.02", "0.04"]


def test_timeout_is_retried_then_reported(server: TokenServer) -> None:
    server.delay_next(2, 1.0)
    with pytest.raises(OAuth2AuthenticationError, match="timed out"):
        fetch(server, timeout_seconds=0.2, retry={"attempts": 1, "initial_delay": 0, "max_delay": 0})
    assert server.token_requests == 2


def test_connection_reset_is_retried(server: TokenServer) -> None:
    server.reset_connection_next(1)
    assert fetch(server)
    assert server.token_requests == 2


def test_unreachable_endpoint_names_the_host() -> None:
    with TokenServer() as srv:
        url = srv.token_url
    with pytest.raises(OAuth2AuthenticationError, match=r"could not reach token endpoint 127\.0\.0\.1"):
        TokenClient(provider(url, retry={"attempts": 0})).fetch()


def test_redirects_are_refused_and_not_followed(server: TokenServer) -> None:
    with TokenServer() as elsewhere:
        elsewhere.add_client("test-client", SECRET)
        server.redirect_next(1, location=elsewhere.token_url, status=307)
        with pytest.raises(OAuth2AuthenticationError, match=r"redirecting to 127\.0\.0\.1:\d+"):
            fetch(server)
        assert elsewhere.token_requests == 0
    assert server.token_requests == 1


def test_a_same_host_redirect_names_the_url_to_configure(server: TokenServer) -> None:
    """django-oauth-toolkit (Django's APPEND_SLASH) answers a token_url without its trailing slash
    with a relative 301: the message says where, not "an unknown host"."""
    server.redirect_next(1, location="/token/?next=" + quote(SECRET, safe=""), status=301)
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server)
    message = str(info.value)
    assert "HTTP 301" in message and "unknown host" not in message
    assert f"set token_url to {server.url}/token/" in message and "trailing slash" in message
    assert SECRET not in message and quote(SECRET, safe="") not in message and "next=" not in message
    assert server.token_requests == 1


def test_a_same_host_redirect_elsewhere_shows_the_path_without_the_slash_hint(server: TokenServer) -> None:
    server.redirect_next(1, location=f"{server.url.upper()}/oauth2/v2/token?client_secret=x", status=308)
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server)
    message = str(info.value)
    assert f"set token_url to {server.url}/oauth2/v2/token" in message
    assert "trailing slash" not in message


BASIC_HINT = 'basic_auth_encoding: "raw"'


@pytest.mark.parametrize("status", [401, 403])
@pytest.mark.parametrize("body", [b"", b"<html>Forbidden</html>"], ids=["empty", "html"])
def test_a_401_or_403_without_an_error_code_gets_the_invalid_client_hint(
    server: TokenServer, status: int, body: bytes
) -> None:
    server.replay_next(ReplayResponse(status=status, reason="No", body=body))
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server)
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert "check client_id, client_secret, token_endpoint_auth_method" in message
    assert BASIC_HINT in message, "SECRET holds characters form-encoding changes"
    assert SECRET not in message and quote(SECRET, safe="") not in message
    assert server.token_requests == 1


@pytest.mark.parametrize(
    ("overrides", "raw_hint"),
    [
        ({}, True),
        ({"client_secret": "plain-secret-123"}, False),
        ({"client_id": "app@example.com", "client_secret": "plain-secret-123"}, True),
        ({"token_endpoint_auth_method": "client_secret_post"}, False),
        ({"basic_auth_encoding": "raw"}, False),
    ],
    ids=["basic-special", "basic-plain", "basic-special-id", "post", "already-raw"],
)
def test_the_basic_encoding_hint_appears_only_when_encoding_changed_the_credentials(
    server: TokenServer, overrides: dict[str, str], raw_hint: bool
) -> None:
    server.replay_next(ReplayResponse(status=401, reason="Unauthorized", body=b""))
    server.fail_next(1, status=401, error="invalid_client")
    for _ in range(2):  # the empty 401, then an RFC 6749 invalid_client
        with pytest.raises(OAuth2AuthenticationError) as info:
            fetch(server, **overrides)
        message = str(info.value)
        assert "check client_id" in message
        assert (BASIC_HINT in message) is raw_hint, message
        assert SECRET not in message


@pytest.mark.parametrize(
    "overrides",
    [{}, {"client_secret": "plain-secret-123"}, {"basic_auth_encoding": "raw"}],
    ids=["basic-special", "basic-plain", "raw"],
)
def test_the_hints_survive_litellms_secret_redaction(server: TokenServer, overrides: dict[str, str]) -> None:
    """The LiteLLM proxy passes error texts through its secret redaction: "client_secret" followed
    by a space and a word reads to it as a credential, and the hint would lose words."""
    from litellm.litellm_core_utils.secret_redaction import redact_string

    server.fail_next(1, status=401, error="invalid_client")
    with pytest.raises(OAuth2AuthenticationError) as info:
        fetch(server, **overrides)
    hint = str(info.value).partition("invalid_client")[2]
    proxied = hint + "\n\nLiteLLM: model group 'chat' failed with the error above."
    assert "REDACTED" not in redact_string(proxied), redact_string(proxied)


def test_afetch_does_not_block_the_event_loop(server: TokenServer) -> None:
    server.delay_next(1, 0.3)
    client = TokenClient(provider(server.token_url))

    async def main() -> tuple[str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        token = await client.afetch()
        task.cancel()
        return token.access_token.get_secret_value(), ticks

    token, ticks = asyncio.run(main())
    assert server.verify_access_token(token) is not None
    assert ticks >= 10


def test_nothing_secret_in_logs_or_errors(server: TokenServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.add_client("rt-client", SECRET, refresh_token="rt-KNOWN-refresh", rotate_refresh_token=True)
    texts: list[str] = []
    client = TokenClient(provider(server.token_url, client_id="rt-client", refresh_token="rt-KNOWN-refresh"))
    server.fail_next(1, status=503)
    token = client.fetch()
    texts += [repr(token), str(token), repr(client)]
    for status, error in [(401, "invalid_client"), (400, "invalid_grant"), (503, None)]:
        server.fail_next(5, status=status, error=error)
        with pytest.raises(OAuth2AuthenticationError) as info:
            fetch(server, retry={"attempts": 1, "initial_delay": 0, "max_delay": 0})
        texts += [str(info.value), repr(info.value), repr(info.value.original_error)]
    texts += [record.getMessage() for record in caplog.records]
    secrets = [SECRET, quote_plus(SECRET), "rt-KNOWN-refresh", *server.issued_tokens]
    assert token.refresh_token is not None
    secrets.append(token.refresh_token.get_secret_value())
    leaks = [(secret, text) for secret in secrets for text in texts if secret in text]
    assert not leaks, f"secret material leaked into {len(leaks)} log lines or error texts"


# -- helpers -----------------------------------------------------------------------------------


def test_basic_authorization_encoding() -> None:
    assert _basic_authorization("a b", "c:d") == "Basic " + base64.b64encode(b"a%20b:c%3Ad").decode()
    assert _basic_authorization("a b", "c:d", raw=True) == "Basic " + base64.b64encode(b"a b:c:d").decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [("5", 5.0), (" 12 ", 12.0), ("", None), (None, None), ("soon", None), ("-3", None), ("1e9999", None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert _parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    from email.utils import formatdate

    assert 28 <= (_parse_retry_after(formatdate(time.time() + 30, usegmt=True)) or 0) <= 30


def test_jwt_lifetime_reads_exp_and_iat_without_verifying() -> None:
    def signed(claims: dict[str, object]) -> str:
        return jwt.encode(claims, "k" * 32, algorithm="HS256")

    assert jwt_lifetime(signed({"exp": 2_000_000_000}), 1_999_999_000.0) == 1000.0
    whole = signed({"iat": 1000, "exp": 1300})  # issued within [1000, 1001)
    assert jwt_lifetime(whole, 1000.25) == 299.75  # clocks in step: exp - now
    assert jwt_lifetime(whole, 5000.0) == 299.0  # this clock ahead: the latest issue time
    assert jwt_lifetime(whole, 5.0) == 300.0  # this clock behind: the earliest
    assert jwt_lifetime(signed({"iat": 1000.5, "exp": 1300}), 5000.0) == 299.5
    assert jwt_lifetime(signed({"iat": True, "exp": 1300}), 1000.0) == 300.0
    assert jwt_lifetime(signed({"exp": 10**400}), 0.0) is None
    assert jwt_lifetime("opaque-token", 0.0) is None
    assert jwt_lifetime("a.!!!.c", 0.0) is None


# -- environment: proxies, read once -----------------------------------------------------------


class ForwardingProxy(LoopbackServer):
    """A plain HTTP forward proxy: relays absolute-form requests and remembers their targets."""

    def __init__(self) -> None:
        super().__init__()
        self.relayed: list[str] = []

    def respond(self, request: RecordedRequest) -> Response:
        self.relayed.append(request.path)
        target = urlsplit(request.path)
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=10)
        hop_by_hop = {"connection", "proxy-connection", "keep-alive", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        connection.request(request.method, target.path, body=request.body, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        connection.close()
        kept = {k: v for k, v in answer.getheaders() if k.lower() not in hop_by_hop | {"date", "server"}}
        return Response(answer.status, body, kept)


def test_proxy_from_the_environment_is_used_and_read_when_the_provider_loads(
    server: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ForwardingProxy() as proxy:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        client = TokenClient(provider(server.token_url))
        # Changed after loading: the provider keeps what it read (requests is not asked per call).
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        token = client.fetch().access_token.get_secret_value()
        assert proxy.relayed == [server.token_url]
        assert server.verify_access_token(token) is not None

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        TokenClient(provider(server.token_url)).fetch()
        assert proxy.relayed == [server.token_url] and server.token_requests == 2
