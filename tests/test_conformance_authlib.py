"""Conformance: our token client against Authlib's authorization server, an independent implementation.

The server (``authlib_server.py``) is Authlib 1.9's framework-agnostic ``AuthorizationServer``
with the client credentials grant, served for real on a loopback port. Every protocol decision
(client authentication, assertion checks, scope checks, error responses) is Authlib's.

Interop finding, client_secret_basic: RFC 6749 §2.3.1 says the client id and secret are
``application/x-www-form-urlencoded`` before Basic encoding. Authlib decodes them with
``urllib.parse.unquote`` (percent-decoding only), not ``unquote_plus``, so a space sent as ``+``
would be read as a literal ``+``. We percent-encode a space as ``%20``, which both kinds of
decoder read back as a space, so a secret with a space works against Authlib and against servers
that follow the form rules. ``basic_auth_encoding: "raw"`` sends the credentials unencoded; Authlib
still percent-decodes them, so a raw secret containing a ``%XX`` sequence is altered.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from authlib.oauth2.rfc6749.util import extract_basic_authorization  # type: ignore[import-untyped]
from authlib_server import TOKEN_LIFETIME, AuthlibTokenServer, RegisteredClient
from helpers import SECRET, ec_key_pair, provider, rsa_key_pair
from joserfc.jwk import ECKey, KeySet, RSAKey

from litellm_oauth2 import OAuth2AuthenticationError
from litellm_oauth2.client import Token, TokenClient, _basic_authorization
from litellm_oauth2.config import ProviderSettings

# RFC 6749 §2.3.1 special characters, no space: both sides agree on the encoding.
BASIC_SECRET = "b4s1c:/+%&=secret"
# A valid percent-escape: Authlib decodes it even when we send the secret raw.
PERCENT_SECRET = "p%41ss-word"
REQUESTED_SCOPE = "chat.read chat.write"


@dataclass(frozen=True)
class Keys:
    rsa_private: str
    ec_private: str
    rsa_kid_private: str
    stranger_rsa_private: str
    stranger_ec_private: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_private, _ = rsa_key_pair()
    ec_private, _ = ec_key_pair()
    rsa_kid_private, _ = rsa_key_pair()
    stranger_rsa, _ = rsa_key_pair()
    stranger_ec, _ = ec_key_pair()
    return Keys(rsa_private, ec_private, rsa_kid_private, stranger_rsa, stranger_ec)


def _public(private_pem: str, kind: type[RSAKey] | type[ECKey], kid: str | None = None) -> RSAKey | ECKey:
    public = kind.import_key(private_pem).as_dict(private=False)
    if kid:
        public["kid"] = kid
    key: RSAKey | ECKey = kind.import_key(public)
    return key


@pytest.fixture(scope="module")
def authlib_server(keys: Keys) -> Iterator[AuthlibTokenServer]:
    server = AuthlibTokenServer()
    clients = [
        RegisteredClient("basic-client", "client_secret_basic", secret=BASIC_SECRET),
        RegisteredClient("basic-spaced", "client_secret_basic", secret=SECRET),
        RegisteredClient("basic-percent", "client_secret_basic", secret=PERCENT_SECRET),
        RegisteredClient("post-client", "client_secret_post", secret=SECRET),
        RegisteredClient("rs256-client", "private_key_jwt", public_key=_public(keys.rsa_private, RSAKey)),
        RegisteredClient("es256-client", "private_key_jwt", public_key=_public(keys.ec_private, ECKey)),
        RegisteredClient(
            "jwks-client",
            "private_key_jwt",
            public_key=KeySet(
                [
                    _public(keys.stranger_rsa_private, RSAKey, kid="old"),
                    _public(keys.rsa_kid_private, RSAKey, kid="current"),
                ]
            ),
        ),
    ]
    for client in clients:
        server.add_client(client)
    with server.running():
        yield server


@pytest.fixture
def server(authlib_server: AuthlibTokenServer) -> AuthlibTokenServer:
    authlib_server.reset()
    return authlib_server


def fetch(settings: ProviderSettings) -> Token:
    client = TokenClient(settings)
    try:
        return client.fetch()
    finally:
        client.close()


def fetch_error(settings: ProviderSettings) -> OAuth2AuthenticationError:
    with pytest.raises(OAuth2AuthenticationError) as caught:
        fetch(settings)
    return caught.value


def pkjwt(server: AuthlibTokenServer, client_id: str, private_pem: str, algorithm: str) -> ProviderSettings:
    return provider(
        server.token_url,
        client_id=client_id,
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key=private_pem,
        signing_algorithm=algorithm,
        scope=REQUESTED_SCOPE,
    )


def settings_for(method: str, server: AuthlibTokenServer, keys: Keys) -> ProviderSettings:
    if method == "client_secret_basic":
        return provider(
            server.token_url, client_id="basic-client", client_secret=BASIC_SECRET, scope=REQUESTED_SCOPE
        )
    if method == "client_secret_post":
        return provider(
            server.token_url,
            client_id="post-client",
            token_endpoint_auth_method="client_secret_post",
            scope=REQUESTED_SCOPE,
        )
    if method == "private_key_jwt-RS256":
        return pkjwt(server, "rs256-client", keys.rsa_private, "RS256")
    assert method == "private_key_jwt-ES256"
    return pkjwt(server, "es256-client", keys.ec_private, "ES256")


AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt-RS256", "private_key_jwt-ES256"]


# -- a token with every client authentication method --------------------------------------------


@pytest.mark.parametrize("method", AUTH_METHODS)
def test_each_auth_method_obtains_a_token(method: str, server: AuthlibTokenServer, keys: Keys) -> None:
    token = fetch(settings_for(method, server, keys))

    assert token.token_type == "Bearer"
    assert 0 < token.lifetime <= TOKEN_LIFETIME
    assert token.expires_in() > 0
    assert token.scope == REQUESTED_SCOPE
    assert token.refresh_token is None  # RFC 6749 §4.4.3: none for client credentials
    assert server.requests == 1
    (issued,) = server.issued
    assert issued.auth_method == method.split("-")[0]
    assert issued.access_token == token.access_token.get_secret_value()
    assert issued.scope == REQUESTED_SCOPE


def test_requested_scope_subset_is_granted_as_requested(server: AuthlibTokenServer) -> None:
    settings = provider(
        server.token_url, client_id="basic-client", client_secret=BASIC_SECRET, scope="models.list"
    )
    assert fetch(settings).scope == "models.list"


def test_private_key_jwt_assertions_are_not_replays(server: AuthlibTokenServer, keys: Keys) -> None:
    """Authlib refuses a reused ``jti`` (RFC 7523 §3 item 7); one client's fetches must each get a new one."""
    client = TokenClient(pkjwt(server, "rs256-client", keys.rsa_private, "RS256"))
    try:
        first, second = client.fetch(), client.fetch()
    finally:
        client.close()
    assert first.access_token != second.access_token
    assert server.requests == 2


def jwks_settings(server: AuthlibTokenServer, keys: Keys, key_id: str | None) -> ProviderSettings:
    return provider(
        server.token_url,
        client_id="jwks-client",
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key=keys.rsa_kid_private,
        key_id=key_id,
    )


def test_private_key_jwt_key_id_selects_the_key_from_the_clients_jwks(
    server: AuthlibTokenServer, keys: Keys
) -> None:
    assert fetch(jwks_settings(server, keys, "current")).token_type == "Bearer"
    assert server.issued[0].client_id == "jwks-client"


def test_private_key_jwt_without_key_id_is_refused_when_the_client_has_several_keys(
    server: AuthlibTokenServer, keys: Keys
) -> None:
    """Authlib (joserfc) picks the JWKS key by ``kid`` only, so ``key_id`` is needed for such clients."""
    error = fetch_error(jwks_settings(server, keys, None))

    assert error.error == "invalid_client"
    assert server.requests == 1


# -- failures ------------------------------------------------------------------------------------


# RFC 6749 §5.2: invalid_client is 400 or 401, and MUST be 401 when the client used the Authorization header.
@pytest.mark.parametrize(
    ("client_id", "method", "statuses"),
    [("basic-client", "client_secret_basic", {401}), ("post-client", "client_secret_post", {400, 401})],
)
def test_wrong_secret_is_invalid_client_without_retry(
    client_id: str, method: str, statuses: set[int], server: AuthlibTokenServer
) -> None:
    settings = provider(
        server.token_url,
        client_id=client_id,
        client_secret="not-the-secret",
        token_endpoint_auth_method=method,
    )
    error = fetch_error(settings)

    assert error.error == "invalid_client"
    assert error.http_status in statuses
    assert server.requests == 1
    assert server.issued == []
    assert "not-the-secret" not in str(error)


def test_unknown_scope_is_invalid_scope_without_retry(server: AuthlibTokenServer) -> None:
    settings = provider(
        server.token_url, client_id="basic-client", client_secret=BASIC_SECRET, scope="chat.read admin"
    )
    error = fetch_error(settings)

    assert error.error == "invalid_scope"
    assert error.http_status == 400
    assert server.requests == 1
    assert server.issued == []


@pytest.mark.parametrize(
    ("client_id", "algorithm", "attr"),
    [("rs256-client", "RS256", "stranger_rsa_private"), ("es256-client", "ES256", "stranger_ec_private")],
)
def test_private_key_jwt_with_unknown_key_is_invalid_client(
    client_id: str, algorithm: str, attr: str, server: AuthlibTokenServer, keys: Keys
) -> None:
    error = fetch_error(pkjwt(server, client_id, getattr(keys, attr), algorithm))

    assert error.error == "invalid_client"
    assert error.http_status in (400, 401)  # Authlib answers 400: no Authorization header was used
    assert server.requests == 1
    assert server.issued == []


# -- client_secret_basic encoding against a decoder that does not turn "+" into a space ---------------------


def test_authlib_reads_our_basic_credentials_back_exactly() -> None:
    """Authlib's own decoder on our own encoder: a space, '+' and '%' survive the round trip."""
    header = _basic_authorization("my client", "a b+c%d")
    assert base64.b64decode(header.split()[1]) == b"my%20client:a%20b%2Bc%25d"
    assert extract_basic_authorization({"Authorization": header}) == ("my client", "a b+c%d")


@pytest.mark.parametrize(
    ("client_id", "secret", "encoding", "accepted"),
    [
        pytest.param("basic-client", BASIC_SECRET, "rfc6749", True, id="specials-rfc6749"),
        pytest.param("basic-client", BASIC_SECRET, "raw", True, id="specials-raw"),
        pytest.param("basic-spaced", SECRET, "rfc6749", True, id="space-rfc6749"),
        pytest.param("basic-spaced", SECRET, "raw", True, id="space-raw"),
        pytest.param("basic-percent", PERCENT_SECRET, "rfc6749", True, id="percent-escape-rfc6749"),
        pytest.param("basic-percent", PERCENT_SECRET, "raw", False, id="percent-escape-raw-refused"),
    ],
)
def test_basic_secret_encoding_against_authlib(
    client_id: str, secret: str, encoding: str, accepted: bool, server: AuthlibTokenServer
) -> None:
    settings = provider(
        server.token_url, client_id=client_id, client_secret=secret, basic_auth_encoding=encoding
    )
    if accepted:
        assert fetch(settings).token_type == "Bearer"
    else:
        error = fetch_error(settings)
        assert error.error == "invalid_client"
        assert server.issued == []
    assert server.requests == 1


def test_secret_with_space_works_with_client_secret_post(server: AuthlibTokenServer) -> None:
    """The workaround for any secret: the form body is decoded the same way by both sides."""
    settings = provider(
        server.token_url, client_id="post-client", token_endpoint_auth_method="client_secret_post"
    )
    assert " " in SECRET
    assert fetch(settings).token_type == "Bearer"
