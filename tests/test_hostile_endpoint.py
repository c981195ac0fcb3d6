"""A hostile token endpoint: property-based tests against the loopback token server in replay mode.

Hypothesis generates every byte the endpoint sends back (status line, headers, body, framing),
when it sends them (delays, dribbling, stalls) and how the connection ends (cut mid-body, FIN,
RST), for every attempt the retry policy allows. ``TokenServer.replay_next`` writes them to the
socket verbatim. Whatever comes back, ``TokenClient.fetch`` must:

* return a valid ``Token`` (an access token that fits an HTTP header, type Bearer, a finite
  positive lifetime) or raise ``OAuth2AuthenticationError``; nothing else escapes;
* finish within the bound its retry policy implies: ``attempts + 1`` requests of at most
  ``timeout_seconds`` each, plus at most ``max_delay`` between them;
* never let the endpoint inject a header or a log line (token and messages are printable);
* never put a credential it sends (client secret, refresh token, their encodings) into an error
  text (message, ``error``, ``error_description``, formatted traceback) or a log line, even when
  the endpoint echoes them back. ``original_error``, the transport's own exception, is kept as
  is and may quote raw bytes the endpoint sent (e.g. a malformed status line); the plugin never
  logs it.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import requests
from helpers import SECRET, provider
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from litellm_oauth2 import OAuth2AuthenticationError
from litellm_oauth2.client import MAX_LIFETIME_SECONDS, Token, TokenClient, _basic_authorization
from litellm_oauth2.testing.token_server import ReplayResponse, TokenServer

REFRESH = "rt-KNOWN-refresh/+= token"


def credentials(client_id: str, refresh_token: str | None) -> dict[str, str]:
    """What the client sends and an endpoint might echo: none of it may reach an error or a log line."""
    sent = {
        "client secret": SECRET,
        "client secret (form-encoded)": quote_plus(SECRET),
        "client secret (percent-encoded)": quote(SECRET, safe=""),
        "Basic credentials": _basic_authorization(client_id, SECRET).removeprefix("Basic "),
    }
    if refresh_token is not None:
        sent.update(
            {"refresh token": refresh_token, "refresh token (form-encoded)": quote_plus(refresh_token)}
        )
    return sent


CREDENTIALS = {**credentials("test-client", REFRESH), **credentials("rt-client", REFRESH)}
# Per-request overhead on top of timeout_seconds (connect, thread hand-offs on a loaded machine).
ATTEMPT_SLACK_SECONDS = 0.25
HOSTILE = settings(
    max_examples=int(os.environ.get("LITELLM_OAUTH2_HOSTILE_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


@dataclass
class Capture(logging.Handler):
    """Every record of the plugin's logger, formatted."""

    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(logging.DEBUG)

    def __hash__(self) -> int:
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def fresh_server() -> Iterator[TokenServer]:
    """A server per example: a late request of one example must not eat the next one's script."""
    with TokenServer(key_type="EC") as srv:  # EC: key generation in microseconds
        srv.add_client("test-client", SECRET)
        srv.add_client("rt-client", SECRET, refresh_token=REFRESH)
        yield srv


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    handler = Capture()
    logger = logging.getLogger("litellm_oauth2")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- what the endpoint sends ---------------------------------------------------------------------

latin1_text = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
echoes = st.sampled_from(sorted(set(CREDENTIALS.values())))
nasty_strings = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\r\nX-Injected: 1",
        "\r\n\r\nHTTP/1.1 200 OK",
        "tok en",
        "tok\ten",
        "tök",
        "\u202etoken",
        "😀",
        "x" * 5000,
        "Bearer abc",
    ]
)
text_values = st.one_of(
    st.text(max_size=30), nasty_strings, echoes, echoes.map(lambda s: f"bad secret: {s}!")
)
numbers = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 10**400, -(10**400), 1e-300, 2**63, True, False]),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, text_values)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


def jwt_shaped(claims: Any) -> str:
    """A JWT-looking token whose payload is ``claims`` (the client reads ``exp`` unverified)."""

    def part(value: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part(claims)}.sig"


access_tokens = st.one_of(
    st.from_regex(r"[!-~]{1,60}", fullmatch=True),
    st.builds(jwt_shaped, st.fixed_dictionaries({"exp": numbers | text_values})),
    st.just(jwt_shaped({"exp": time.time() + 3600})),
    st.just(jwt_shaped({"exp": 10**400})),
    st.just("a.b.c"),
    st.just("a.!!!.c"),
    text_values,
    json_values,
)
token_types = st.one_of(
    st.sampled_from(
        ["Bearer", "bearer", "BEARER", "Bearer ", " Bearer", "Bearer\x00", "bеarer", "mac", "DPoP"]
    ),
    json_values,
    echoes,
)
expires_ins = st.one_of(
    numbers,
    st.sampled_from(["3600", " 60 ", "1e400", "nan", "inf", "-1", "0x10", "١٢٣", "", "soon"]),
    json_values,
)


@st.composite
def token_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A success body: the RFC 6749 §5.1 fields, each maybe missing, mistyped or hostile."""
    fields = {
        "access_token": access_tokens,
        "token_type": token_types,
        "expires_in": expires_ins,
        "scope": json_values,
        "refresh_token": st.one_of(text_values, json_values),
    }
    document: dict[str, Any] = {}
    for name, values in fields.items():
        if draw(st.integers(0, 3)):  # each field present three times out of four
            document[name] = draw(values)
    document.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return document


error_documents = st.fixed_dictionaries(
    {},
    optional={
        "error": st.one_of(
            st.sampled_from(["invalid_client", "temporarily_unavailable", "server_error", "slow_down"]),
            text_values,
            json_values,
        ),
        "error_description": st.one_of(text_values, json_values),
        "error_uri": text_values,
    },
)


def encode(document: Any, how: str) -> bytes:
    if how == "numbers as strings" and isinstance(document, dict):
        document = {k: str(v) if isinstance(v, int | float) else v for k, v in document.items()}
    text = json.dumps(document, allow_nan=True)
    if how == "utf-16":
        return text.encode("utf-16")
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "trailing garbage":
        return text.encode() + b"}\x00"
    return text.encode()


special_bodies = st.sampled_from(
    [
        b"",
        b"null",
        b"[]",
        b'"access_token"',
        b"<html>oops</html>",
        b"\x00" * 16,
        b"\xff\xfe\xfd",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"access_token": "a", "token_type": "Bearer", "expires_in": ' + b"9" * 5000 + b"}",
        b'{"access_token": "a", "token_type": "Bearer", "expires_in": NaN}',
        b'{"access_token": "a", "token_type": "Bearer", "expires_in": -Infinity}',
        b'{"access_token": "a\\u0000b", "token_type": "Bearer"}',
        b'{"access_token": "a", "access_token": "b\\r\\nX: 1", "token_type": "Bearer"}',
        b'{"access_token": "' + b"a" * (1024 * 1024 + 1) + b'", "token_type": "Bearer"}',
        b'{"access_token": "a", "token_type": "Bearer", "padding": "' + b" " * (1024 * 1024) + b'"}',
    ]
)
bodies = st.one_of(
    st.builds(
        encode,
        token_documents(),
        st.sampled_from(["json", "json", "json", "numbers as strings", "utf-16", "bom", "trailing garbage"]),
    ),
    st.builds(encode, error_documents, st.just("json")),
    st.builds(encode, json_values, st.just("json")),
    special_bodies,
    st.binary(max_size=64),
)
header_names = st.one_of(
    st.sampled_from(
        [
            "Retry-After",
            "Retry-After",
            "Content-Type",
            "Location",
            "Content-Encoding",
            "Transfer-Encoding",
            "Content-Length",
            "Connection",
            "Set-Cookie",
            "WWW-Authenticate",
            "Authorization",
        ]
    ),
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
    latin1_text,
)
header_values = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "1.5",
            "²",
            "¹²³",
            "9" * 400,
            "1e9999",
            "nan",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 +9999",
            "31 Dec 9999 23:59:59 -0000",
            "application/json",
            "text/html; charset=utf-16",
            "gzip",
            "br",
            "chunked",
            "close",
            "http://[::1",
            "http://127.0.0.1:1/x",
            "https://user:pw@evil.example:99999/",
            "//evil.example",
            f"https://test-client:{SECRET}@evil.example/",
        ]
    ),
    latin1_text,
    echoes,
)
statuses = st.one_of(
    st.sampled_from(
        [200, 200, 200, 201, 204, 301, 302, 303, 307, 308, 400, 401, 403, 408, 429, 500, 502, 503]
    ),
    st.integers(min_value=100, max_value=999),
)
reasons = st.one_of(st.just("OK"), st.from_regex(r"[ -~]{0,20}", fullmatch=True), latin1_text)
small = st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.01, 0.05])


@st.composite
def responses(draw: st.DrawFn, timeout: float) -> ReplayResponse:
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "length", "length", "chunked", "close"]))
    slow = draw(st.integers(0, 9)) == 0  # one response in ten is slow, stalls or dribbles
    return ReplayResponse(
        status=draw(statuses),
        reason=draw(reasons),
        headers=tuple(draw(st.lists(st.tuples(header_names, header_values), max_size=4))),
        body=body,
        framing=framing,
        content_length=draw(st.none() | st.none() | st.integers(0, len(body) + 100)),
        chunks=draw(st.integers(1, 5)),
        cut_after=draw(st.none() | st.none() | st.none() | st.integers(0, len(body) + 20)),
        delay=draw(st.floats(0, 2 * timeout)) if slow else draw(small),
        pieces=draw(st.integers(1, 40)) if slow else 1,
        pause=draw(st.floats(0, 0.9 * timeout)) if slow else 0.0,
        hang_up=draw(st.sampled_from(["no", "no", "fin", "rst"])),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[ReplayResponse]]:
    """Provider settings and one scripted response per attempt the retry policy allows."""
    attempts = draw(st.integers(0, 2))
    initial = draw(st.sampled_from([0.0, 0.01, 0.02]))
    retry = {
        "attempts": attempts,
        "initial_delay": initial,
        "max_delay": draw(st.sampled_from([initial, 0.05])),
    }
    timeout = draw(st.sampled_from([0.2, 0.3]))
    overrides: dict[str, Any] = {"retry": retry, "timeout_seconds": timeout, "default_expires_in": 300}
    overrides["token_endpoint_auth_method"] = draw(
        st.sampled_from(["client_secret_basic", "client_secret_post"])
    )
    if draw(st.booleans()):
        overrides.update(client_id="rt-client", refresh_token=REFRESH)
    return overrides, draw(st.lists(responses(timeout), min_size=attempts + 1, max_size=attempts + 1))


# -- the property --------------------------------------------------------------------------------


def policy_bound(overrides: dict[str, Any]) -> float:
    """Seconds the retry policy allows: every attempt times out, every wait is the longest."""
    retry = overrides["retry"]
    attempts = retry["attempts"] + 1
    return (
        attempts * (overrides["timeout_seconds"] + ATTEMPT_SLACK_SECONDS)
        + retry["attempts"] * retry["max_delay"]
    )


def describe(replayed: list[ReplayResponse]) -> str:
    return "; ".join(
        f"HTTP {r.status} {r.framing} body={len(r.body)}B cut={r.cut_after} delay={r.delay:.2f}s "
        f"pieces={r.pieces}x{r.pause:.2f}s hang_up={r.hang_up}"
        for r in replayed
    )


def leaked_credentials(overrides: dict[str, Any], texts: list[str]) -> list[str]:
    sent = credentials(overrides.get("client_id", "test-client"), overrides.get("refresh_token"))
    return sorted({label for label, value in sent.items() for text in texts if value in text})


def check_token(token: Token, what: str) -> None:
    value = token.access_token.get_secret_value()
    assert value and all("!" <= ch <= "~" for ch in value), (
        f"header injection: {what} returned an access token with characters not allowed in a header: {value[:80]!r}"
    )
    requests.Request("GET", "http://127.0.0.1/", headers={"Authorization": f"Bearer {value}"}).prepare()
    assert token.token_type == "Bearer", f"{what} returned token_type {token.token_type!r}"
    assert math.isfinite(token.lifetime) and 0 < token.lifetime <= MAX_LIFETIME_SECONDS, (
        f"{what} returned a token with lifetime {token.lifetime!r}: callers could never refresh it"
    )
    assert math.isfinite(token.expires_at), f"{what} returned expires_at {token.expires_at!r}"


def check_error(error: OAuth2AuthenticationError, what: str) -> list[str]:
    texts = [
        str(error),
        repr(error),
        error.message,
        str(error.error),
        str(error.error_description),
        "".join(traceback.format_exception(error)),
    ]
    assert type(error) is OAuth2AuthenticationError, f"{what} raised the internal {type(error).__name__}"
    assert error.provider == "idp_test", f"{what} lost the provider name: {error.provider!r}"
    for name, value in [
        ("message", error.message),
        ("error", error.error),
        ("error_description", error.error_description),
    ]:
        assert value is None or value.isprintable(), (
            f"log/header injection: {what} put non-printable endpoint text in the error's {name}: {value!r}"
        )
    return texts


@HOSTILE
@given(scenario=scenarios())
@example(  # an endpoint dribbling a valid response, one byte well within each read timeout
    scenario=(
        {"retry": {"attempts": 1, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [ReplayResponse(body=b'{"access_token":"abc","token_type":"Bearer"}', pieces=30, pause=0.15)] * 2,
    )
)
@example(  # Retry-After with a digit that is not ASCII
    scenario=(
        {"retry": {"attempts": 1, "initial_delay": 0, "max_delay": 0.01}, "timeout_seconds": 0.2},
        [ReplayResponse(status=503, headers=(("Retry-After", "²"),))] * 2,
    )
)
@example(  # a redirect whose Location does not parse, and one carrying the secret
    scenario=(
        {"retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [ReplayResponse(status=302, headers=(("Location", "http://[::1"),))],
    )
)
@example(
    scenario=(
        {"retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [ReplayResponse(status=307, headers=(("Location", f"https://test-client:{SECRET}@evil/"),))],
    )
)
@example(  # expires_in, and a JWT's exp, too large for a float
    scenario=(
        {"retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [
            ReplayResponse(
                body=b'{"access_token":"a","token_type":"Bearer","expires_in":1' + b"0" * 400 + b"}"
            )
        ],
    )
)
@example(
    scenario=(
        {"retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [
            ReplayResponse(
                body=json.dumps(
                    {"access_token": jwt_shaped({"exp": 10**400}), "token_type": "Bearer"}
                ).encode()
            )
        ],
    )
)
@example(  # the endpoint echoes the client secret in its error
    scenario=(
        {"retry": {"attempts": 0, "initial_delay": 0, "max_delay": 0}, "timeout_seconds": 0.2},
        [
            ReplayResponse(
                status=401,
                body=json.dumps(
                    {"error": "invalid_client", "error_description": f"secret {SECRET} is wrong"}
                ).encode(),
            )
        ],
    )
)
def test_any_endpoint_behaviour_gives_a_token_or_an_oauth2_error_in_bounded_time(
    capture: Capture, scenario: tuple[dict[str, Any], list[ReplayResponse]]
) -> None:
    overrides, replayed = scenario
    overrides = {"default_expires_in": 300, **overrides}
    what = f"fetch() against [{describe(replayed)}]"
    capture.lines.clear()
    with fresh_server() as server:
        server.replay_next(*replayed)
        client = TokenClient(provider(server.token_url, **overrides))
        started = time.monotonic()
        try:
            outcome: Token | BaseException = client.fetch()
        except BaseException as exc:  # the property is about exactly what escapes
            outcome = exc
        finally:
            elapsed = time.monotonic() - started
            client.close()
            token_requests = server.token_requests
    texts = list(capture.lines)
    if isinstance(outcome, Token):
        check_token(outcome, what)
    else:
        assert isinstance(outcome, OAuth2AuthenticationError), (
            f"{what} let {type(outcome).__name__} escape instead of OAuth2AuthenticationError: {outcome!r}"
        )
        texts += check_error(outcome, what)
    bound = policy_bound(overrides)
    assert elapsed <= 1.5 * bound + 1.0, (
        f"{what} took {elapsed:.2f} s; the retry policy bounds it to {bound:.2f} s "
        f"(a caller and everyone waiting on the same token were held beyond it)"
    )
    allowed_requests = overrides["retry"]["attempts"] + 1
    assert token_requests <= allowed_requests, (
        f"{what} sent {token_requests} token requests; the retry policy allows {allowed_requests}"
    )
    leaked = leaked_credentials(overrides, texts)
    assert not leaked, f"{what} leaked {leaked} into error texts or log lines"
    injected = [line for line in capture.lines if not line.isprintable()]
    assert not injected, f"log injection: {what} produced log lines with control characters: {injected[:2]!r}"
