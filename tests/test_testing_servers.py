"""The loopback test servers, exercised over real HTTP."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from litellm_oauth2.testing import OpenAIUpstream, RecordedRequest, TokenServer
from litellm_oauth2.testing.token_server import MALFORM_KINDS

pytest_plugins = ["litellm_oauth2.testing.pytest_plugin"]

CC = {"grant_type": "client_credentials"}
WEIRD_SECRET = "s3:c/r+e%t&x= y"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[TokenServer, OpenAIUpstream]]:
    """Started once per module (key generation and startup are the slow part)."""
    with TokenServer() as token_server, OpenAIUpstream(token_server, static_api_key="static-key") as gateway:
        token_server.add_client("alice", "alice-secret")
        token_server.add_client("we:ird id", WEIRD_SECRET)
        token_server.add_client("scoped", "pw", allowed_scopes={"read", "write"})
        yield token_server, gateway


@pytest.fixture
def server(servers: tuple[TokenServer, OpenAIUpstream]) -> Iterator[TokenServer]:
    token_server = servers[0]
    yield token_server
    token_server.reset()
    token_server.token_lifetime = 3600.0
    token_server.delay = 0.0


@pytest.fixture
def upstream(servers: tuple[TokenServer, OpenAIUpstream]) -> Iterator[OpenAIUpstream]:
    yield servers[1]
    servers[1].reset()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def token(server: TokenServer, http: requests.Session, **form: str) -> str:
    reply = http.post(server.token_url, data={**CC, **form}, auth=("alice", "alice-secret"))
    assert reply.status_code == 200, reply.text
    access_token: str = reply.json()["access_token"]
    return access_token


def claims_of(server: TokenServer, access_token: str) -> dict[str, Any]:
    claims = server.verify_access_token(access_token)
    assert claims is not None
    return claims


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def assertion(key: Any, algorithm: str, client_id: str, audience: str, **overrides: Any) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": int(time.time()) + 60,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    return jwt.encode(claims, key, algorithm=algorithm)


# -- token endpoint: client authentication ------------------------------------------------------


def test_client_secret_basic_rfc_encoded(server: TokenServer, http: requests.Session) -> None:
    reply = http.post(
        server.token_url, data=CC, headers=basic(quote_plus("we:ird id"), quote_plus(WEIRD_SECRET))
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and "scope" not in body
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Pragma"] == "no-cache"
    assert reply.headers["Content-Type"] == "application/json"
    claims = server.verify_access_token(body["access_token"])
    assert claims is not None
    assert claims["sub"] == claims["client_id"] == "we:ird id"
    assert claims["iss"] == server.url and claims["aud"] == "litellm-oauth2-test"
    assert server.token_requests_for("we:ird id") == 1


def test_client_secret_basic_raw(server: TokenServer, http: requests.Session) -> None:
    server.add_client("raw-client", "p+a:ss%2")
    reply = http.post(server.token_url, data=CC, auth=("raw-client", "p+a:ss%2"))
    assert reply.status_code == 200, reply.text


def test_client_secret_post(server: TokenServer, http: requests.Session) -> None:
    reply = http.post(server.token_url, data={**CC, "client_id": "we:ird id", "client_secret": WEIRD_SECRET})
    assert reply.status_code == 200, reply.text
    assert server.requests[0].form["client_secret"] == [WEIRD_SECRET]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_private_key_jwt(server: TokenServer, http: requests.Session, algorithm: str) -> None:
    def new_key() -> Any:
        return (
            rsa.generate_private_key(65537, 2048)
            if algorithm == "RS256"
            else ec.generate_private_key(ec.SECP256R1())
        )

    key = new_key()
    client_id = f"jwt-{algorithm}"
    server.add_client(client_id, public_key_pem=pem(key).decode())
    jwt_form = {**CC, "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}

    signed = assertion(key, algorithm, client_id, server.token_url)
    reply = http.post(server.token_url, data={**jwt_form, "client_assertion": signed})
    assert reply.status_code == 200, reply.text
    assert claims_of(server, reply.json()["access_token"])["sub"] == client_id
    assert server.token_requests_for(client_id) == 1

    replay = http.post(
        server.token_url, data={**jwt_form, "client_assertion": signed, "client_id": client_id}
    )
    assert (replay.status_code, replay.json()["error"]) == (400, "invalid_client")

    issuer_audience = assertion(key, algorithm, client_id, server.url)
    assert (
        http.post(server.token_url, data={**jwt_form, "client_assertion": issuer_audience}).status_code == 200
    )

    bad = [
        assertion(key, algorithm, client_id, "https://elsewhere.example/token"),
        assertion(key, algorithm, client_id, server.token_url, sub="someone-else"),
        assertion(key, algorithm, client_id, server.token_url, exp=int(time.time()) - 5),
        assertion(new_key(), algorithm, client_id, server.token_url),
        assertion(ec.generate_private_key(ec.SECP256R1()), "ES256", client_id, server.token_url),
    ]
    for signed in bad:
        reply = http.post(server.token_url, data={**jwt_form, "client_assertion": signed})
        assert (reply.status_code, reply.json()["error"]) == (401, "invalid_client")
    mismatched = assertion(key, algorithm, client_id, server.token_url)
    reply = http.post(
        server.token_url, data={**jwt_form, "client_assertion": mismatched, "client_id": "alice"}
    )
    assert reply.status_code == 401


def test_invalid_client(server: TokenServer, http: requests.Session) -> None:
    wrong_basic = http.post(server.token_url, data=CC, auth=("alice", "nope"))
    assert (wrong_basic.status_code, wrong_basic.json()) == (
        401,
        {"error": "invalid_client", "error_description": "client authentication failed"},
    )
    assert wrong_basic.headers["WWW-Authenticate"] == 'Basic realm="test"'

    wrong_post = http.post(server.token_url, data={**CC, "client_id": "alice", "client_secret": "nope"})
    assert wrong_post.status_code == 401 and "WWW-Authenticate" not in wrong_post.headers
    unknown = http.post(server.token_url, data=CC, auth=("mallory", "alice-secret"))
    assert unknown.status_code == 401
    anonymous = http.post(server.token_url, data={**CC, "client_id": "alice"})
    assert anonymous.status_code == 401
    not_base64 = http.post(server.token_url, data=CC, headers={"Authorization": "Basic %%%"})
    assert not_base64.status_code == 401
    other_form_id = http.post(
        server.token_url, data={**CC, "client_id": "scoped"}, auth=("alice", "alice-secret")
    )
    assert other_form_id.status_code == 401
    assert server.token_requests == 6 and server.token_requests_for("alice") == 4


def test_two_authentication_methods_rejected(server: TokenServer, http: requests.Session) -> None:
    form = {**CC, "client_id": "alice", "client_secret": "alice-secret"}
    reply = http.post(server.token_url, data=form, auth=("alice", "alice-secret"))
    assert (reply.status_code, reply.json()["error"]) == (400, "invalid_request")


def test_scopes(server: TokenServer, http: requests.Session) -> None:
    granted = http.post(server.token_url, data={**CC, "scope": "read  write read"}, auth=("scoped", "pw"))
    assert granted.json()["scope"] == "read write"
    assert claims_of(server, granted.json()["access_token"])["scope"] == "read write"
    refused = http.post(server.token_url, data={**CC, "scope": "read admin"}, auth=("scoped", "pw"))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    unrestricted = http.post(
        server.token_url, data={**CC, "scope": "anything"}, auth=("alice", "alice-secret")
    )
    assert unrestricted.json()["scope"] == "anything"


def test_grant_type_errors(server: TokenServer, http: requests.Session) -> None:
    auth = ("alice", "alice-secret")
    unsupported = http.post(server.token_url, data={"grant_type": "password"}, auth=auth)
    assert (unsupported.status_code, unsupported.json()["error"]) == (400, "unsupported_grant_type")
    missing = http.post(server.token_url, data={"scope": "x"}, auth=auth)
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    as_json = http.post(server.token_url, json=CC, auth=auth)
    assert (as_json.status_code, as_json.json()["error"]) == (400, "invalid_request")
    get = http.get(server.token_url)
    assert get.status_code == 405
    assert server.token_requests == 3  # only POSTs count


def test_duplicate_parameters_rejected_but_resource_repeats(
    server: TokenServer, http: requests.Session
) -> None:
    auth = ("alice", "alice-secret")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = "grant_type=client_credentials&scope=a&scope=b"
    duplicated = http.post(server.token_url, data=body, headers=form, auth=auth)
    assert (duplicated.status_code, duplicated.json()["error"]) == (400, "invalid_request")
    assert "scope" in duplicated.json()["error_description"]

    resources = [
        ("grant_type", "client_credentials"),
        ("resource", "https://a.example"),
        ("resource", "urn:b"),
    ]
    reply = http.post(server.token_url, data=resources, auth=auth)
    assert claims_of(server, reply.json()["access_token"])["aud"] == ["https://a.example", "urn:b"]
    relative = http.post(server.token_url, data={**CC, "resource": "/relative"}, auth=auth)
    assert (relative.status_code, relative.json()["error"]) == (400, "invalid_target")
    audience = token(server, http, audience="https://gateway.example", resource="https://ignored.example")
    assert claims_of(server, audience)["aud"] == "https://gateway.example"


def test_chunked_request_body(server: TokenServer, http: requests.Session) -> None:
    parts = iter([b"grant_type=client_", b"credentials"])
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = http.post(server.token_url, data=parts, headers=headers, auth=("alice", "alice-secret"))
    assert reply.status_code == 200, reply.text
    assert "transfer-encoding" in server.requests[0].headers


# -- refresh tokens -------------------------------------------------------------------------------


def test_refresh_token_rotation(server: TokenServer, http: requests.Session) -> None:
    server.add_client("rotating", "pw", refresh_token="rt-1", rotate_refresh_token=True)
    first = http.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "rt-1"},
        auth=("rotating", "pw"),
    )
    assert first.status_code == 200, first.text
    rotated = first.json()["refresh_token"]
    assert rotated != "rt-1" and server.verify_access_token(first.json()["access_token"]) is not None
    stale = http.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "rt-1"},
        auth=("rotating", "pw"),
    )
    assert (stale.status_code, stale.json()["error"]) == (400, "invalid_grant")
    fresh = http.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": rotated},
        auth=("rotating", "pw"),
    )
    assert fresh.status_code == 200 and fresh.json()["refresh_token"] != rotated


def test_refresh_token_without_rotation(server: TokenServer, http: requests.Session) -> None:
    server.add_client("steady", "pw", refresh_token="rt")
    for _ in range(2):
        reply = http.post(
            server.token_url,
            data={"grant_type": "refresh_token", "refresh_token": "rt"},
            auth=("steady", "pw"),
        )
        assert reply.status_code == 200 and "refresh_token" not in reply.json()
    missing = http.post(server.token_url, data={"grant_type": "refresh_token"}, auth=("steady", "pw"))
    assert missing.json()["error"] == "invalid_grant"
    never_had_one = http.post(
        server.token_url,
        data={"grant_type": "refresh_token", "refresh_token": "rt"},
        auth=("alice", "alice-secret"),
    )
    assert never_had_one.json()["error"] == "invalid_grant"


# -- fault injection ------------------------------------------------------------------------------


def test_fail_next(server: TokenServer, http: requests.Session) -> None:
    auth = ("alice", "alice-secret")
    server.fail_next(2)
    server.fail_next(
        status=400, error="invalid_grant", error_description="nope", headers={"Retry-After": "7"}
    )
    server.fail_next(status=429)
    server.fail_next(status=502, body=b"<html>bad gateway</html>", headers={"Content-Type": "text/html"})
    replies = [http.post(server.token_url, data=CC, auth=auth) for _ in range(6)]
    assert [r.status_code for r in replies] == [503, 503, 400, 429, 502, 200]
    assert replies[0].json() == {"error": "server_error"}
    assert replies[2].json() == {"error": "invalid_grant", "error_description": "nope"}
    assert replies[2].headers["Retry-After"] == "7"
    assert replies[3].json() == {"error": "invalid_request"}
    assert (
        replies[4].content == b"<html>bad gateway</html>"
        and replies[4].headers["Content-Type"] == "text/html"
    )
    assert server.token_requests == 6 and len(server.issued_tokens) == 1


def test_faults_apply_in_fifo_order_and_reset_clears_them(
    server: TokenServer, http: requests.Session
) -> None:
    server.malform_next(kind="json_array")
    server.fail_next(status=500)
    server.redirect_next()
    statuses = [http.post(server.token_url, data=CC, allow_redirects=False).status_code for _ in range(3)]
    assert statuses == [200, 500, 302]
    server.fail_next(5)
    server.reset()
    assert server.token_requests == 0 and server.requests == []
    assert http.post(server.token_url, data=CC, auth=("alice", "alice-secret")).status_code == 200


def test_delays(server: TokenServer, http: requests.Session) -> None:
    server.delay_next(seconds=0.2)
    started = time.monotonic()
    assert token(server, http)
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    token(server, http)
    assert time.monotonic() - started < 0.2
    server.delay = 0.1
    started = time.monotonic()
    token(server, http)
    assert time.monotonic() - started >= 0.1
    with TokenServer(key_type="EC") as own:  # its close() ends the abandoned request, not a later test
        own.delay_next(seconds=5)
        with pytest.raises(requests.Timeout):
            http.post(own.token_url, data=CC, timeout=0.1)


@pytest.mark.parametrize("kind", sorted(MALFORM_KINDS))
def test_malform_next(server: TokenServer, http: requests.Session, kind: str) -> None:
    server.malform_next(kind=kind)
    reply = http.post(server.token_url, data=CC, auth=("alice", "alice-secret"))
    assert reply.status_code == 200
    if kind == "non_json":
        assert reply.text == "<html>oops</html>" and reply.headers["Content-Type"].startswith("text/html")
        return
    body = reply.json()
    if kind == "json_array":
        assert body == []
        return
    expected_keys = {"access_token", "token_type", "expires_in"}
    missing = {"missing_access_token": "access_token", "missing_token_type": "token_type"}.get(kind)
    if kind.startswith("no_expires_in"):
        missing = "expires_in"
    assert set(body) == (expected_keys - {missing}) | ({"padding"} if kind == "huge" else set())
    expectations: dict[str, Callable[[], bool]] = {
        "wrong_token_type": lambda: body["token_type"] == "mac",
        "huge": lambda: len(reply.content) > 2 * 1024 * 1024,
        "newline_token": lambda: body["access_token"].endswith("\r\nX-Injected: 1"),
        "empty_token": lambda: body["access_token"] == "",
        "negative_expires_in": lambda: body["expires_in"] < 0,
        "string_expires_in": lambda: body["expires_in"] == "120",
        "no_expires_in": lambda: claims_of(server, body["access_token"])["exp"] > time.time(),
        "no_expires_in_opaque": lambda: body["access_token"].count(".") == 0,
    }
    assert expectations.get(kind, lambda: True)()
    assert http.post(server.token_url, data=CC, auth=("alice", "alice-secret")).json()["expires_in"] == 3600


def test_malform_next_rejects_unknown_kind(server: TokenServer) -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        server.malform_next(kind="nonsense")


def test_redirect_next(server: TokenServer, http: requests.Session) -> None:
    server.redirect_next(location="http://127.0.0.1:1/other", status=307)
    reply = http.post(server.token_url, data=CC, auth=("alice", "alice-secret"), allow_redirects=False)
    assert reply.status_code == 307 and reply.headers["Location"] == "http://127.0.0.1:1/other"


def test_reset_connection_next(server: TokenServer, http: requests.Session) -> None:
    server.reset_connection_next()
    with pytest.raises(requests.ConnectionError):
        http.post(server.token_url, data=CC, auth=("alice", "alice-secret"))
    assert token(server, http)
    assert server.token_requests == 2


# -- keys, verification, bookkeeping --------------------------------------------------------------


def test_jwks_and_discovery(server: TokenServer, http: requests.Session) -> None:
    keys = http.get(server.jwks_url).json()["keys"]
    assert len(keys) == 1 and keys[0]["kid"] and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"
    issued = token(server, http)
    assert jwt.get_unverified_header(issued)["kid"] == keys[0]["kid"]
    public = jwt.PyJWK.from_dict(keys[0])
    assert jwt.decode(issued, public, algorithms=["RS256"], audience="litellm-oauth2-test")["sub"] == "alice"
    discovery = http.get(server.url + "/.well-known/openid-configuration").json()
    assert discovery == {
        "issuer": server.url,
        "token_endpoint": server.token_url,
        "jwks_uri": server.jwks_url,
    }
    assert http.get(server.url + "/nope").status_code == 404
    assert server.token_requests == 1  # only /token is counted


def test_ec_server_and_custom_issuer(http: requests.Session) -> None:
    with TokenServer(key_type="EC", issuer="https://issuer.example", token_lifetime=90.5) as ec_server:
        ec_server.add_client("c", "s")
        reply = http.post(ec_server.token_url, data=CC, auth=("c", "s")).json()
        assert reply["expires_in"] == 90.5
        assert jwt.get_unverified_header(reply["access_token"])["alg"] == "ES256"
        claims = ec_server.verify_access_token(reply["access_token"])
        assert claims is not None and claims["iss"] == "https://issuer.example"
        assert http.get(ec_server.jwks_url).json()["keys"][0]["crv"] == "P-256"
    with pytest.raises(ValueError, match="HS256"):
        TokenServer(key_type="DSA")


def test_hs256_server_and_gateway_share_a_key_and_refuse_everything_else(http: requests.Session) -> None:
    with TokenServer(key_type="HS256") as hs, OpenAIUpstream(hs) as gateway:
        hs.add_client("alice", "alice-secret")
        assert http.get(hs.jwks_url).json() == {"keys": []}  # a shared key is never published
        issued = token(hs, http)
        assert jwt.get_unverified_header(issued)["alg"] == "HS256"
        assert (
            jwt.decode(issued, hs.shared_key, algorithms=["HS256"], audience="litellm-oauth2-test")["sub"]
            == "alice"
        )
        models = gateway.base_url + "/models"
        assert http.get(models, headers=bearer(issued)).status_code == 200
        head, body, _ = issued.split(".")
        unsigned = jwt.encode({"sub": "x", "exp": time.time() + 60}, None, algorithm="none")
        forged = jwt.encode({"sub": "x", "exp": time.time() + 60}, b"k" * 32, algorithm="HS256")
        hs.token_lifetime = -5
        expired = token(hs, http)
        for bad in [unsigned, forged, f"{head}.{body}.", expired, "a.b", issued + "x"]:
            reply = http.get(models, headers=bearer(bad))
            assert reply.status_code == 401, bad
            assert hs.verify_access_token(bad) is None, bad
        assert "expired" in http.get(models, headers=bearer(expired)).headers["WWW-Authenticate"]
        hs.revoke(issued)
        assert http.get(models, headers=bearer(issued)).status_code == 401
        assert gateway.authorized_requests == 1


def test_token_lifetime_and_verification(server: TokenServer, http: requests.Session) -> None:
    server.token_lifetime = 120
    reply = http.post(server.token_url, data=CC, auth=("alice", "alice-secret")).json()
    assert reply["expires_in"] == 120 and isinstance(reply["expires_in"], int)
    claims = server.verify_access_token(reply["access_token"])
    assert claims is not None and claims["exp"] - claims["iat"] in (120, 121)
    server.token_lifetime = -10
    assert server.verify_access_token(token(server, http)) is None
    assert server.verify_access_token("garbage") is None
    server.revoke(reply["access_token"])
    assert server.verify_access_token(reply["access_token"]) is None
    assert server.is_revoked(reply["access_token"]) and server.is_revoked(claims["jti"])
    assert server.issued_tokens[0] == reply["access_token"] and len(server.issued_tokens) == 2


def test_records(server: TokenServer, http: requests.Session) -> None:
    http.post(
        server.token_url, data={**CC, "scope": ""}, auth=("alice", "alice-secret"), headers={"X-Trace": "1"}
    )
    (recorded,) = server.requests
    assert isinstance(recorded, RecordedRequest)
    assert (recorded.method, recorded.path) == ("POST", "/token")
    assert recorded.headers["x-trace"] == "1" and recorded.headers["authorization"].startswith("Basic ")
    assert recorded.form == {"grant_type": ["client_credentials"], "scope": [""]}
    assert recorded.body == b"grant_type=client_credentials&scope="
    assert server.requests is not server.requests


def test_concurrent_token_requests(server: TokenServer) -> None:
    def fetch(_: int) -> int:
        return requests.post(
            server.token_url, data=CC, auth=("alice", "alice-secret"), timeout=10
        ).status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(fetch, range(100)))
    assert statuses == [200] * 100
    assert server.token_requests == 100 == server.token_requests_for("alice")
    assert len(set(server.issued_tokens)) == 100


# -- upstream -------------------------------------------------------------------------------------


CHAT = {"model": "my-model", "messages": [{"role": "user", "content": "say hello"}]}


def test_upstream_accepts_issued_token(
    server: TokenServer, upstream: OpenAIUpstream, http: requests.Session
) -> None:
    access_token = token(server, http)
    reply = http.post(upstream.base_url + "/chat/completions", json=CHAT, headers=bearer(access_token))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "my-model"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello from upstream (client_id=alice)",
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        and usage["prompt_tokens"] == 2
    )
    assert upstream.requests == upstream.authorized_requests == 1 and upstream.unauthorized_requests == 0
    assert upstream.distinct_tokens == {access_token}
    assert (
        upstream.recorded[0].json == CHAT
        and upstream.recorded[0].headers["authorization"] == f"Bearer {access_token}"
    )


def test_upstream_rejections(server: TokenServer, upstream: OpenAIUpstream, http: requests.Session) -> None:
    chat = upstream.base_url + "/chat/completions"
    no_header = http.post(chat, json=CHAT)
    assert no_header.status_code == 401 and no_header.headers["WWW-Authenticate"] == 'Bearer realm="upstream"'

    server.token_lifetime = -30
    expired = token(server, http)
    server.token_lifetime = 3600
    revoked = token(server, http)
    server.revoke(revoked)
    forged = jwt.encode(
        {"sub": "x", "exp": time.time() + 60}, "k" * 32, algorithm="HS256", headers={"kid": "nope"}
    )
    for bad in ["garbage", expired, revoked, forged, "static-key-but-wrong"]:
        reply = http.post(chat, json=CHAT, headers=bearer(bad))
        assert reply.status_code == 401, bad
        assert reply.json()["error"]["code"] == "invalid_api_key"
        assert reply.headers["WWW-Authenticate"].startswith(
            'Bearer error="invalid_token", error_description="'
        )
    assert "expired" in http.post(chat, json=CHAT, headers=bearer(expired)).headers["WWW-Authenticate"]
    assert http.post(chat, json=CHAT, headers=basic("a", "b")).status_code == 401
    assert upstream.unauthorized_requests == 8 and upstream.authorized_requests == 0
    assert len(upstream.distinct_tokens) == 5


def test_upstream_static_key_and_audience(server: TokenServer, http: requests.Session) -> None:
    with OpenAIUpstream(server, required_audience="https://gw.example", static_api_key="floor") as gateway:
        models = gateway.base_url + "/models"
        assert http.get(models, headers=bearer("floor")).status_code == 200
        assert http.get(models, headers=bearer(token(server, http))).status_code == 401
        assert (
            http.get(models, headers=bearer(token(server, http, audience="https://gw.example"))).status_code
            == 200
        )
        listed = [
            ("grant_type", "client_credentials"),
            ("resource", "https://gw.example"),
            ("resource", "urn:x"),
        ]
        multi = http.post(server.token_url, data=listed, auth=("alice", "alice-secret")).json()[
            "access_token"
        ]
        assert http.get(models, headers=bearer(multi)).status_code == 200
    with OpenAIUpstream(static_api_key="floor") as keyed_only:
        chat = http.post(keyed_only.base_url + "/chat/completions", json=CHAT, headers=bearer("floor")).json()
        assert chat["choices"][0]["message"]["content"] == "Hello from upstream (client_id=static-api-key)"
        assert (
            http.get(keyed_only.base_url + "/models", headers=bearer(token(server, http))).status_code == 401
        )


def test_upstream_refetches_jwks_for_new_key(server: TokenServer, http: requests.Session) -> None:
    with OpenAIUpstream(server) as gateway, TokenServer() as rotated:
        rotated.add_client("alice", "alice-secret")
        assert http.get(gateway.base_url + "/models", headers=bearer(token(server, http))).status_code == 200
        gateway.token_server = rotated  # key rollover: tokens now carry an unseen kid
        assert http.get(gateway.base_url + "/models", headers=bearer(token(rotated, http))).status_code == 200
    with gateway:  # the rotated server is gone, so the old kid cannot be found any more
        reply = http.get(gateway.base_url + "/models", headers=bearer(token(server, http)))
        assert reply.status_code == 401 and "signing keys unavailable" in reply.headers["WWW-Authenticate"]


def test_upstream_trusts_an_issuer_known_only_by_its_jwks_url(
    server: TokenServer, http: requests.Session
) -> None:
    """An identity provider in another process: the gateway gets its JWKS address and a revocation check."""

    class RemoteIssuer:
        jwks_url = server.jwks_url

        def is_revoked(self, token_or_jti: str) -> bool:
            return False

    with OpenAIUpstream(RemoteIssuer()) as gateway:  # type: ignore[arg-type]
        assert http.get(gateway.base_url + "/models", headers=bearer(token(server, http))).status_code == 200


def test_upstream_fail_next(server: TokenServer, upstream: OpenAIUpstream, http: requests.Session) -> None:
    valid = bearer(token(server, http))
    models = upstream.base_url + "/models"
    upstream.fail_next()
    upstream.fail_next(status=403, error="insufficient_scope")
    upstream.fail_next(status=429, error="rate_limited", headers={"Retry-After": "1"})
    upstream.fail_next(status=500, error="boom")
    replies = [http.get(models, headers=valid) for _ in range(5)]
    assert [r.status_code for r in replies] == [401, 403, 429, 500, 200]
    assert replies[0].headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert replies[1].headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    assert replies[2].headers["Retry-After"] == "1" and "WWW-Authenticate" not in replies[2].headers
    assert replies[3].json()["error"]["type"] == "server_error"
    assert upstream.authorized_requests == 5
    upstream.fail_next(3)
    upstream.reset()
    assert upstream.requests == 0 and upstream.recorded == [] and upstream.distinct_tokens == set()
    assert http.get(models, headers=valid).status_code == 200


def test_upstream_streaming(server: TokenServer, upstream: OpenAIUpstream, http: requests.Session) -> None:
    payload = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    reply = http.post(
        upstream.base_url + "/chat/completions",
        json=payload,
        headers=bearer(token(server, http)),
        stream=True,
    )
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in reply.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    assert text == "Hello from upstream (client_id=alice)"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    plain = http.post(
        upstream.base_url + "/chat/completions",
        json={**CHAT, "stream": True},
        headers=bearer(token(server, http)),
    )
    assert "usage" not in plain.text and plain.text.endswith("data: [DONE]\n\n")


def test_upstream_embeddings_and_models(
    server: TokenServer, upstream: OpenAIUpstream, http: requests.Session
) -> None:
    auth = bearer(token(server, http))
    url = upstream.base_url + "/embeddings"
    single = http.post(url, json={"model": "e", "input": "hello world"}, headers=auth).json()
    assert single["object"] == "list" and single["model"] == "e" and single["usage"]["prompt_tokens"] == 2
    (item,) = single["data"]
    assert item["object"] == "embedding" and item["index"] == 0 and len(item["embedding"]) == 8
    many = http.post(url, json={"model": "e", "input": ["hello world", "other"]}, headers=auth).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and many["data"][0]["embedding"] == item["embedding"]
    assert many["data"][1]["embedding"] != item["embedding"]
    tokens = http.post(url, json={"model": "e", "input": [1, 2, 3]}, headers=auth).json()
    assert len(tokens["data"]) == 1 and tokens["usage"]["total_tokens"] == 3
    token_lists = http.post(url, json={"model": "e", "input": [[1, 2], [3]]}, headers=auth).json()
    assert len(token_lists["data"]) == 2
    encoded = http.post(
        url, json={"model": "e", "input": "hello world", "encoding_format": "base64"}, headers=auth
    ).json()
    assert list(struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))) == item["embedding"]
    assert http.post(url, json={"model": "e", "input": []}, headers=auth).status_code == 400
    assert http.post(upstream.base_url + "/chat/completions", data=b"nope", headers=auth).status_code == 400

    models = http.get(upstream.base_url + "/models", headers=auth).json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["test-model"]
    assert http.get(upstream.base_url + "/models").status_code == 401
    assert http.get(upstream.base_url + "/unknown", headers=auth).status_code == 404
    assert upstream.requests == 10 and upstream.authorized_requests == 9


def test_openai_client_wire_compatibility(
    oauth2_token_server: TokenServer, openai_upstream: OpenAIUpstream
) -> None:
    import openai  # slow to import: only this test needs it

    form = {**CC, "client_id": "test-client", "client_secret": "test-secret"}
    issued = requests.post(oauth2_token_server.token_url, data=form, timeout=5).json()["access_token"]
    with openai.OpenAI(api_key=issued, base_url=openai_upstream.base_url, max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
        assert completion.choices[0].message.content == "Hello from upstream (client_id=test-client)"
        assert completion.model == "gpt-test" and completion.usage is not None

        stream = client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "Hello from upstream (client_id=test-client)"
        )
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5

        embedded = client.embeddings.create(model="emb", input=["a", "b"])  # base64 on the wire
        assert len(embedded.data) == 2 and len(embedded.data[0].embedding) == 8
        floats = client.embeddings.create(model="emb", input="a", encoding_format="float")
        assert floats.data[0].embedding == embedded.data[0].embedding
        assert [m.id for m in client.models.list()] == ["test-model"]

    with (
        openai.OpenAI(api_key="wrong", base_url=openai_upstream.base_url, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()
    assert openai_upstream.distinct_tokens == {issued, "wrong"}


# -- lifecycle ------------------------------------------------------------------------------------


def test_close_joins_every_thread_even_with_idle_keep_alive_and_pending_delay() -> None:
    before = set(threading.enumerate())
    token_server = TokenServer()
    token_server.add_client("c", "s")
    with token_server, OpenAIUpstream(token_server) as gateway:
        session = requests.Session()
        access_token = session.post(token_server.token_url, data=CC, auth=("c", "s")).json()["access_token"]
        assert session.get(gateway.base_url + "/models", headers=bearer(access_token)).status_code == 200
        token_server.delay_next(seconds=30)
        outcome: list[object] = []

        def post() -> None:
            try:
                outcome.append(session.post(token_server.token_url, data=CC, auth=("c", "s")).status_code)
            except requests.RequestException as exc:
                outcome.append(exc)

        hanging = threading.Thread(target=post)
        hanging.start()
        while token_server.token_requests < 2:
            time.sleep(0.005)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    hanging.join(5)
    assert len(outcome) == 1  # the delayed request ended (answered or cut) instead of hanging
    assert set(threading.enumerate()) - before == set()  # (threads of earlier tests may have ended)
    with pytest.raises(RuntimeError):
        _ = token_server.url
    token_server.close()  # idempotent


def test_restart(http: requests.Session) -> None:
    token_server = TokenServer()
    token_server.add_client("c", "s")
    for _ in range(2):
        with token_server:
            assert token_server.start() is token_server
            assert http.post(token_server.token_url, data=CC, auth=("c", "s")).status_code == 200
    assert token_server.token_requests == 2
