"""Credentials without a shared secret in the config: federated assertions, rotated files, discovery.

All against the real loopback token server: the assertion file is rewritten, the secret file
rotated, the metadata served, between real token requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SECRET, config_of, provider, provider_dict

from litellm_oauth2 import OAuth2AuthenticationError, OAuth2ConfigurationError
from litellm_oauth2._discovery import METADATA
from litellm_oauth2.client import CLIENT_ASSERTION_TYPE, TokenClient
from litellm_oauth2.config import ProviderSettings
from litellm_oauth2.testing import TokenServer

SUBJECT = "system:serviceaccount:llm:chat-app"
ROTATED = "r0tated-KNOWN-secret/+%"


@pytest.fixture
def server() -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300) as srv:
        srv.add_client("workload", federated_subject=SUBJECT)
        srv.add_client("test-client", SECRET)
        yield srv


@pytest.fixture(autouse=True)
def _fresh_metadata() -> Iterator[None]:
    METADATA.clear()
    yield
    METADATA.clear()


def assertion_client(server: TokenServer, path: Path, **overrides: object) -> TokenClient:
    settings = provider(
        server.token_url,
        client_id="workload",
        client_secret=None,
        token_endpoint_auth_method="client_assertion",
        client_assertion_path=str(path),
        **overrides,
    )
    return TokenClient(settings)


# -- federated client assertions (RFC 7521/7523 §2.2) ---------------------------------------------


def test_the_assertion_file_is_read_again_for_every_token_request(
    server: TokenServer, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    first, second = server.federated_assertion(SUBJECT), server.federated_assertion(SUBJECT)
    path.write_text(first + "\n")
    client = assertion_client(server, path)
    token = client.fetch()
    path.write_text(second)  # the platform rotated it
    client.fetch()
    sent = [request.form for request in server.requests]
    assert [form["client_assertion"] for form in sent] == [[first], [second]]
    assert all(form["client_assertion_type"] == [CLIENT_ASSERTION_TYPE] for form in sent)
    assert all(form["client_id"] == ["workload"] for form in sent)
    assert all("authorization" not in request.headers for request in server.requests)
    assert server.verify_access_token(token.access_token.get_secret_value())["sub"] == "workload"


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "cannot be read"), ("", "empty file"), ("  \n", "empty file"), ("expired", "expired")],
)
def test_an_unusable_assertion_is_never_sent(
    server: TokenServer, tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "token"
    if content == "expired":
        content = server.federated_assertion(SUBJECT, lifetime=-30)
    if content is not None:
        path.write_text(content)
    client = assertion_client(server, path)
    with pytest.raises(OAuth2AuthenticationError) as info:
        client.fetch()
    assert reason in info.value.message and str(path) in info.value.message
    assert "client_assertion_path" in info.value.message and info.value.provider == "idp_test"
    assert not info.value.transient
    assert server.token_requests == 0


def test_a_refused_assertion_names_the_federated_credential_and_never_shows_it(
    server: TokenServer, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    foreign = server.federated_assertion("system:serviceaccount:other:app")
    path.write_text(foreign)
    with pytest.raises(OAuth2AuthenticationError) as info:
        assertion_client(server, path).fetch()
    assert info.value.error == "invalid_client" and "client_assertion_path" in info.value.message
    assert foreign not in str(info.value) and foreign not in repr(info.value)


def test_client_assertion_needs_its_file_and_only_it_takes_one(tmp_path: Path) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        provider(
            "https://idp.example.com/token", client_secret=None, token_endpoint_auth_method="client_assertion"
        )
    assert info.value.field == "client_assertion_path"
    with pytest.raises(OAuth2ConfigurationError) as info:
        provider("https://idp.example.com/token", client_assertion_path=str(tmp_path / "token"))
    assert info.value.field == "client_assertion_path"


# -- rotated credential files ----------------------------------------------------------------------


def test_a_rotated_secret_file_recovers_after_one_invalid_client(
    server: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "client-secret"
    path.write_text(SECRET + "\n")  # mounted secrets often end in a newline
    client = TokenClient(provider(server.token_url, client_secret=None, client_secret_path=str(path)))
    client.fetch()
    server.add_client("test-client", ROTATED)  # the identity provider rotated the secret...
    path.write_text(ROTATED)  # ...and the platform updated the mounted file
    with caplog.at_level(logging.DEBUG, logger="litellm_oauth2"):
        token = client.fetch()
    assert server.verify_access_token(token.access_token.get_secret_value())
    assert [r.form.get("client_secret") for r in server.requests] == [None] * 3  # basic auth
    assert server.token_requests == 3  # one success, one invalid_client, one retry
    assert "credential file has changed" in caplog.text
    assert ROTATED not in caplog.text and SECRET not in caplog.text
    client.fetch()
    assert server.token_requests == 4  # the new secret stays in use


def test_an_unchanged_secret_file_is_not_retried(server: TokenServer, tmp_path: Path) -> None:
    path = tmp_path / "client-secret"
    path.write_text(SECRET)
    client = TokenClient(provider(server.token_url, client_secret=None, client_secret_path=str(path)))
    server.add_client("test-client", ROTATED)
    with pytest.raises(OAuth2AuthenticationError) as info:
        client.fetch()
    assert info.value.error == "invalid_client"
    assert server.token_requests == 1


def test_a_rotated_private_key_file_recovers_after_one_invalid_client(
    server: TokenServer, tmp_path: Path
) -> None:
    from helpers import rsa_key_pair

    old_private, old_public = rsa_key_pair()
    new_private, new_public = rsa_key_pair()
    server.add_client("jwt-client", public_key_pem=old_public)
    path = tmp_path / "key.pem"
    path.write_text(old_private)
    settings = provider(
        server.token_url,
        client_id="jwt-client",
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key_path=str(path),
    )
    client = TokenClient(settings)
    client.fetch()
    server.add_client("jwt-client", public_key_pem=new_public)
    path.write_text(new_private)
    client.fetch()
    assert server.token_requests == 3


def test_the_secret_file_is_read_at_load_and_the_cache_key_follows_its_content(tmp_path: Path) -> None:
    path = tmp_path / "client-secret"
    path.write_text(SECRET)
    from_file = provider("https://idp.example.com/token", client_secret=None, client_secret_path=str(path))
    inline = provider("https://idp.example.com/token")
    assert from_file.client_secret is not None and from_file.client_secret.get_secret_value() == SECRET
    path.write_text(ROTATED)
    rotated = provider("https://idp.example.com/token", client_secret=None, client_secret_path=str(path))
    assert rotated.cache_key != from_file.cache_key  # same file, another secret: another token
    assert len({inline.cache_key, from_file.cache_key, rotated.cache_key}) == 3
    assert SECRET not in repr(from_file) and SECRET not in str(from_file.model_dump())


def test_an_unreadable_secret_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(OAuth2ConfigurationError) as info:
        provider("https://idp.example.com/token", client_secret=None, client_secret_path=str(missing))
    assert info.value.field == "client_secret_path" and "cannot be read" in info.value.message
    assert str(missing) not in info.value.message  # a configured value is never echoed
    with pytest.raises(OAuth2ConfigurationError) as info:
        provider("https://idp.example.com/token", client_secret_path=str(missing))
    assert info.value.field == "client_secret_path"


# -- discovery (RFC 8414, OpenID Connect Discovery) -----------------------------------------------


def by_issuer(issuer: str, **overrides: object) -> ProviderSettings:
    settings = {key: value for key, value in provider_dict("", **overrides).items() if key != "token_url"}
    return config_of({"idp_test": {**settings, "issuer": issuer}}).provider("idp_test")


def test_discovery_finds_the_token_endpoint_once_per_process(server: TokenServer) -> None:
    settings = by_issuer(server.issuer)
    first, second = TokenClient(settings), TokenClient(settings)
    assert server.verify_access_token(first.fetch().access_token.get_secret_value())
    second.fetch()
    first.fetch()
    assert server.metadata_requests == 1
    assert server.token_requests == 3


def test_discovery_falls_back_to_the_rfc8414_location(tmp_path: Path) -> None:
    from litellm_oauth2._discovery import metadata_urls

    assert metadata_urls("https://idp.example.com/tenant/v2.0") == [
        "https://idp.example.com/tenant/v2.0/.well-known/openid-configuration",
        "https://idp.example.com/.well-known/oauth-authorization-server/tenant/v2.0",
    ]


def test_a_document_for_another_issuer_is_refused(server: TokenServer) -> None:
    server.metadata_overrides = {"issuer": "https://evil.example.com"}
    client = TokenClient(by_issuer(server.issuer))
    with pytest.raises(OAuth2AuthenticationError) as info:
        client.fetch()
    assert "differs from the configured issuer" in info.value.message
    assert f"{server.issuer}/.well-known/openid-configuration" in info.value.message
    assert server.token_requests == 0


def test_a_document_pointing_at_plain_http_elsewhere_is_refused(server: TokenServer) -> None:
    server.metadata_overrides = {"token_endpoint": "http://idp.example.com/token"}
    client = TokenClient(by_issuer(server.issuer))
    with pytest.raises(OAuth2AuthenticationError) as info:
        client.fetch()
    assert "plain http://" in info.value.message and server.issuer in info.value.message
    assert server.token_requests == 0


def test_discovery_failures_are_retried_and_name_the_url() -> None:
    with TokenServer() as down:
        issuer = down.issuer
    settings = by_issuer(issuer)
    with pytest.raises(OAuth2AuthenticationError) as info:
        TokenClient(settings).fetch()
    assert info.value.transient and "gave up after 4 attempts" in info.value.message
    assert f"{issuer}/.well-known/openid-configuration" in info.value.message


def test_exactly_one_of_token_url_and_issuer() -> None:
    neither = provider_dict("")
    del neither["token_url"]
    for settings in (
        provider_dict("https://idp.example.com/token", issuer="https://idp.example.com"),
        neither,
    ):
        with pytest.raises(OAuth2ConfigurationError) as info:
            config_of({"idp_test": settings})
        assert info.value.field == "token_url"


def test_the_assertion_never_reaches_logs_or_errors_even_when_echoed(
    server: TokenServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "token"
    assertion = server.federated_assertion(SUBJECT)
    path.write_text(assertion)
    client = assertion_client(server, path)
    server.fail_next(status=400, error="invalid_client", error_description=f"bad assertion {assertion}")
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(OAuth2AuthenticationError) as info:
            client.fetch()
        client.fetch()
    assert "bad assertion ***" in info.value.message
    for text in (caplog.text, str(info.value), repr(info.value), str(info.value.error_description)):
        assert assertion not in text
