"""Mutual TLS client authentication (RFC 8705) over real TLS on loopback.

A private CA made by the test issues the token server's certificate and the clients'; the token
server asks for client certificates in the handshake, authenticates ``tls_client_auth`` and
``self_signed_tls_client_auth`` clients by them and binds their tokens to them (``cnf.x5t#S256``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import config_of, provider_dict

from litellm_oauth2 import OAuth2AuthenticationError, OAuth2ConfigurationError
from litellm_oauth2._discovery import METADATA
from litellm_oauth2.client import TokenClient
from litellm_oauth2.config import ProviderSettings
from litellm_oauth2.testing import TokenServer
from litellm_oauth2.testing._tls import CertificateFiles, PrivateCA

CLIENT = "mtls-client"
KEY_PASSWORD = "k3y-PASSWORD-known"


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path / "pki")


@pytest.fixture
def server(ca: PrivateCA) -> Iterator[TokenServer]:
    with TokenServer(token_lifetime=300, key_type="HS256", tls=ca.server_context()) as srv:
        srv.add_client(CLIENT, certificate_subject=CLIENT)
        yield srv


def mtls_settings(
    server_url: str, ca: PrivateCA, certificate: CertificateFiles, **overrides: Any
) -> ProviderSettings:
    fields: dict[str, Any] = {
        "client_id": CLIENT,
        "client_secret": None,
        "token_endpoint_auth_method": "tls_client_auth",
        "client_certificate_path": str(certificate.certificate_path),
        "client_key_path": str(certificate.key_path),
        "verify": str(ca.ca_path),
    }
    settings = provider_dict(server_url, **{**fields, **overrides})
    return config_of({"idp_test": settings}).provider("idp_test")


def claims_of(server: TokenServer, token: Any) -> dict[str, Any]:
    claims = server.verify_access_token(token.access_token.get_secret_value())
    assert claims is not None
    return claims


def test_tls_client_auth_sends_no_secret_and_gets_a_certificate_bound_token(
    server: TokenServer, ca: PrivateCA
) -> None:
    certificate = ca.issue(CLIENT)
    token = TokenClient(mtls_settings(server.token_url, ca, certificate)).fetch()
    (request,) = server.requests
    assert request.body == b"grant_type=client_credentials&client_id=mtls-client"
    assert "authorization" not in request.headers
    assert request.client_certificate == certificate.der
    assert claims_of(server, token)["cnf"] == {"x5t#S256": certificate.thumbprint}


def test_self_signed_tls_client_auth(ca: PrivateCA) -> None:
    certificate = ca.self_signed("self-signed-client")
    with TokenServer(key_type="HS256", tls=ca.server_context()) as server:
        server.add_client("self-signed-client", certificate_pem=certificate.pem)
        settings = mtls_settings(
            server.token_url,
            ca,
            certificate,
            client_id="self-signed-client",
            token_endpoint_auth_method="self_signed_tls_client_auth",
        )
        token = TokenClient(settings).fetch()
        assert claims_of(server, token)["cnf"] == {"x5t#S256": certificate.thumbprint}


def test_certificate_files_replaced_between_two_fetches_are_presented(
    server: TokenServer, ca: PrivateCA
) -> None:
    first = ca.issue(CLIENT, stem="client")
    client = TokenClient(mtls_settings(server.token_url, ca, first))
    first_token = client.fetch()
    second = ca.issue(CLIENT, stem="client")  # cert-manager renewed it in place
    assert second.certificate_path == first.certificate_path and second.der != first.der
    second_token = client.fetch()
    assert [request.client_certificate for request in server.requests] == [first.der, second.der]
    assert claims_of(server, first_token)["cnf"]["x5t#S256"] == first.thumbprint
    assert claims_of(server, second_token)["cnf"]["x5t#S256"] == second.thumbprint


def test_a_certificate_of_another_client_is_refused(server: TokenServer, ca: PrivateCA) -> None:
    with pytest.raises(OAuth2AuthenticationError) as info:
        TokenClient(mtls_settings(server.token_url, ca, ca.issue("intruder"))).fetch()
    assert info.value.error == "invalid_client"
    assert "client_certificate_path" in info.value.message


def test_an_encrypted_key_with_its_password_from_the_environment(
    server: TokenServer, ca: PrivateCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    certificate = ca.issue(CLIENT, password=KEY_PASSWORD.encode())
    monkeypatch.setenv("CLIENT_KEY_PASSWORD", KEY_PASSWORD)
    settings = mtls_settings(
        server.token_url, ca, certificate, client_key_password="os.environ/CLIENT_KEY_PASSWORD"
    )
    assert KEY_PASSWORD not in repr(settings)
    token = TokenClient(settings).fetch()
    assert claims_of(server, token)["cnf"] == {"x5t#S256": certificate.thumbprint}


@pytest.mark.parametrize(
    ("problem", "field", "reason"),
    [
        ("missing certificate", "client_certificate_path", "cannot be read"),
        ("missing key", "client_key_path", "cannot be read"),
        ("key of another certificate", "client_key_path", "does not match"),
        ("no certificate in the file", "client_certificate_path", "no PEM certificate"),
        ("encrypted key, no password", "client_key_password", "is required"),
        ("encrypted key, wrong password", "client_key_password", "does not decrypt"),
    ],
)
def test_certificate_problems_are_found_at_load_naming_the_file(
    ca: PrivateCA, tmp_path: Path, problem: str, field: str, reason: str
) -> None:
    certificate, other = ca.issue(CLIENT), ca.issue("other")
    overrides: dict[str, Any] = {}
    named = None
    if problem == "missing certificate":
        overrides["client_certificate_path"] = named = str(tmp_path / "absent.pem")
    elif problem == "missing key":
        overrides["client_key_path"] = named = str(tmp_path / "absent.key")
    elif problem == "key of another certificate":
        overrides["client_key_path"] = named = str(other.key_path)
    elif problem == "no certificate in the file":
        overrides["client_certificate_path"] = named = str(certificate.key_path)
    else:
        certificate = ca.issue(CLIENT, password=KEY_PASSWORD.encode(), stem="encrypted")
        if problem.endswith("wrong password"):
            overrides["client_key_password"] = "not-the-password"
            named = str(certificate.key_path)
    with pytest.raises(OAuth2ConfigurationError) as info:
        mtls_settings("https://127.0.0.1/token", ca, certificate, **overrides)
    assert info.value.field == field and reason in info.value.message
    if named is not None:  # a configured value: the field is named, never the value
        assert named not in info.value.message
    assert "not-the-password" not in str(info.value)


def test_mtls_needs_a_certificate() -> None:
    settings = provider_dict(
        "https://idp.example.com/token", client_secret=None, token_endpoint_auth_method="tls_client_auth"
    )
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of({"idp_test": settings})
    assert info.value.field == "client_certificate_path"


def test_discovery_takes_the_mtls_alias_for_an_mtls_client(server: TokenServer, ca: PrivateCA) -> None:
    METADATA.clear()
    server.metadata_overrides = {"token_endpoint": "https://127.0.0.1:9/not-for-mtls"}
    certificate = ca.issue(CLIENT)
    settings = provider_dict(
        "",
        client_id=CLIENT,
        client_secret=None,
        token_endpoint_auth_method="tls_client_auth",
        client_certificate_path=str(certificate.certificate_path),
        client_key_path=str(certificate.key_path),
        verify=str(ca.ca_path),
        issuer=server.issuer,
    )
    del settings["token_url"]
    try:
        TokenClient(config_of({"idp_test": settings}).provider("idp_test")).fetch()
    finally:
        METADATA.clear()
    assert server.metadata_requests == 1 and server.token_requests == 1


def test_the_key_password_never_reaches_logs_or_errors(
    server: TokenServer, ca: PrivateCA, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CLIENT_KEY_PASSWORD", KEY_PASSWORD)
    good = ca.issue(CLIENT, password=KEY_PASSWORD.encode(), stem="good")
    intruder = ca.issue("intruder", password=KEY_PASSWORD.encode(), stem="intruder")
    errors = []
    with caplog.at_level(logging.DEBUG):
        for certificate in (good, intruder):
            settings = mtls_settings(
                server.token_url, ca, certificate, client_key_password="os.environ/CLIENT_KEY_PASSWORD"
            )
            client = TokenClient(settings)
            try:
                client.fetch()
            except OAuth2AuthenticationError as exc:
                errors.append(exc)
            assert KEY_PASSWORD not in repr(client) + repr(settings) + str(settings.model_dump())
    assert len(errors) == 1 and errors[0].error == "invalid_client"
    assert KEY_PASSWORD not in caplog.text + str(errors[0]) + repr(errors[0])
