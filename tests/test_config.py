"""The configuration file: defaults, every validation rule, loading, env references, secrecy.

Every failure must be an ``OAuth2ConfigurationError`` (``OAuth2ValidationError`` for a bad
value) naming the provider and the field, and no message may ever contain a secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from litellm_oauth2.config import (
    CONFIG_ENV_VAR,
    MAX_CONFIG_BYTES,
    MAX_JSON_DEPTH,
    RESERVED_TOKEN_PARAMS,
    MemoryCacheSettings,
    OAuth2Config,
    ProviderSettings,
    RedisCacheSettings,
    RetrySettings,
    _is_loopback_host,
    _parse_document,
    config_path,
    load_config,
)
from litellm_oauth2.errors import OAuth2ConfigurationError, OAuth2ValidationError

SAMPLES = Path(__file__).resolve().parent.parent / "sample_configs"

SECRET = "Xq7-KNOWN-client-secret-4fJ2"
REFRESH = "rt.KNOWN-refresh-token.9wLp"
REDIS_PASSWORD = "KNOWN-redis-password-3Hd"
NUMERIC_SECRET = 48151623424281
PROVIDER = "acme_gw"
TOKEN_URL = "https://idp.example.com/oauth2/token"

Config = OAuth2ConfigurationError
Invalid = OAuth2ValidationError


@pytest.fixture(scope="module")
def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_marker(pem: str) -> str:
    """A line of the key body: unique to this key, unlike the BEGIN/END armour."""
    return pem.splitlines()[5]


def settings_of(**overrides: Any) -> dict[str, Any]:
    """Valid provider settings; an override of ``None`` removes the field."""
    base: dict[str, Any] = {"client_id": "acme-client", "client_secret": SECRET, "token_url": TOKEN_URL}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def config_of(providers: dict[str, Any] | None = None, **top: Any) -> OAuth2Config:
    return OAuth2Config.from_dict({"oauth2_providers": providers or {PROVIDER: settings_of()}, **top})


def provider_of(**overrides: Any) -> ProviderSettings:
    return config_of({PROVIDER: settings_of(**overrides)}).provider(PROVIDER)


def provider_error(settings: dict[str, Any], name: str = PROVIDER) -> OAuth2ConfigurationError:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of({name: settings})
    return info.value


def assert_blames(error: Exception, cls: type[Exception], field: str, name: str = PROVIDER) -> None:
    assert type(error) is cls, f"{type(error).__name__}: {error}"
    message = str(error)
    assert f"provider '{name}'" in message
    assert f"'{field}" in message, message
    assert error.provider == name  # type: ignore[attr-defined]


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def valid_document(name: str = PROVIDER) -> str:
    return json.dumps({"oauth2_providers": {name: settings_of()}})


# ---------------------------------------------------------------------------------------- defaults

PROVIDER_DEFAULTS: dict[str, Any] = {
    "client_secret": None,
    "client_secret_path": None,
    "client_assertion_path": None,
    "client_certificate_path": None,
    "client_key_path": None,
    "client_key_password": None,
    "gateway_client_certificate_path": None,
    "gateway_client_key_path": None,
    "gateway_client_key_password": None,
    "token_url": None,
    "issuer": None,
    "scope": None,
    "refresh_token": None,
    "audience": None,
    "resource": (),
    "extra_token_params": {},
    "token_endpoint_auth_method": "client_secret_basic",
    "basic_auth_encoding": "rfc6749",
    "private_key": None,
    "private_key_path": None,
    "signing_algorithm": "RS256",
    "key_id": None,
    "api_base": None,
    "api_style": "openai",
    "api_version": None,
    "responses_api_version": None,
    "headers": {},
    "expiry_buffer_seconds": 60.0,
    "default_expires_in": 3600.0,
    "timeout_seconds": 10.0,
    "verify": True,
    "allow_insecure_http": False,
    "retry": RetrySettings(attempts=3, initial_delay=1.0, max_delay=30.0),
}


def test_defaults_table_covers_every_optional_field() -> None:
    optional = {name for name, info in ProviderSettings.model_fields.items() if not info.is_required()}
    assert optional == set(PROVIDER_DEFAULTS)


@pytest.mark.parametrize(("field", "expected"), PROVIDER_DEFAULTS.items())
def test_provider_default(field: str, expected: Any) -> None:
    if field == "client_secret":  # only optional where no secret is needed
        minimal = provider_of(
            client_secret=None, token_endpoint_auth_method="private_key_jwt", private_key_path="unused.pem"
        )
    elif field == "token_url":  # only optional where discovery finds it
        minimal = provider_of(token_url=None, issuer="https://idp.example.com")
    else:
        minimal = provider_of()
    assert getattr(minimal, field) == expected


@pytest.mark.parametrize(
    ("field", "expected"), [("attempts", 3), ("initial_delay", 1.0), ("max_delay", 30.0)]
)
def test_retry_default(field: str, expected: float) -> None:
    assert getattr(RetrySettings(), field) == expected
    assert getattr(provider_of(retry={}).retry, field) == expected


def test_cache_defaults_to_memory() -> None:
    assert config_of().cache == MemoryCacheSettings(type="memory")
    assert config_of(cache={}).cache.type == "memory"
    assert config_of(cache={"type": "memory"}).cache.type == "memory"


@pytest.mark.parametrize(("field", "expected"), [("key_prefix", "litellm_oauth2:"), ("encryption", True)])
def test_redis_cache_default(field: str, expected: object) -> None:
    cache = config_of(cache={"type": "redis", "url": "redis://localhost:6379/0"}).cache
    assert isinstance(cache, RedisCacheSettings)
    assert getattr(cache, field) == expected


# -------------------------------------------------------------------------------- validation rules

BAD_PROVIDER_VALUES: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    # required fields
    ("client_id missing", {"client_id": None}, Config, "client_id"),
    ("client_id empty", {"client_id": ""}, Invalid, "client_id"),
    ("client_id number", {"client_id": 12345}, Invalid, "client_id"),
    ("token_url missing", {"token_url": None}, Config, "token_url"),
    ("client_secret missing (basic)", {"client_secret": None}, Invalid, "client_secret"),
    (
        "client_secret missing (post)",
        {"client_secret": None, "token_endpoint_auth_method": "client_secret_post"},
        Invalid,
        "client_secret",
    ),
    ("client_secret empty", {"client_secret": ""}, Invalid, "client_secret"),
    # URLs
    ("token_url empty", {"token_url": ""}, Invalid, "token_url"),
    ("token_url not a string", {"token_url": ["https://idp.example.com"]}, Invalid, "token_url"),
    ("token_url relative", {"token_url": "/oauth2/token"}, Invalid, "token_url"),
    ("token_url no scheme", {"token_url": "idp.example.com/oauth2/token"}, Invalid, "token_url"),
    ("token_url ftp", {"token_url": "ftp://idp.example.com/token"}, Invalid, "token_url"),
    ("token_url no host", {"token_url": "https:///oauth2/token"}, Invalid, "token_url"),
    ("token_url fragment", {"token_url": "https://idp.example.com/token#x"}, Invalid, "token_url"),
    ("token_url empty fragment", {"token_url": "https://idp.example.com/token#"}, Invalid, "token_url"),
    ("token_url credentials", {"token_url": "https://user:pw@idp.example.com/t"}, Invalid, "token_url"),
    ("token_url leading space", {"token_url": " " + TOKEN_URL}, Invalid, "token_url"),
    ("token_url trailing newline", {"token_url": TOKEN_URL + "\n"}, Invalid, "token_url"),
    ("token_url bad ipv6", {"token_url": "https://[::1/token"}, Invalid, "token_url"),
    ("token_url http remote", {"token_url": "http://idp.example.com/token"}, Invalid, "token_url"),
    ("token_url http private ip", {"token_url": "http://10.0.0.7/token"}, Invalid, "token_url"),
    ("token_url http any ip", {"token_url": "http://0.0.0.0/token"}, Invalid, "token_url"),
    ("token_url http localhost-ish", {"token_url": "http://localhost.evil.example/t"}, Invalid, "token_url"),
    ("token_url http 127 name", {"token_url": "http://127.0.0.1.nip.io/token"}, Invalid, "token_url"),
    ("token_url http link-local v6", {"token_url": "http://[fe80::1]/token"}, Invalid, "token_url"),
    ("api_base http remote", {"api_base": "http://gateway.example.com/v1"}, Invalid, "api_base"),
    ("api_base no scheme", {"api_base": "gateway.example.com/v1"}, Invalid, "api_base"),
    ("api_base fragment", {"api_base": "https://gateway.example.com/v1#top"}, Invalid, "api_base"),
    ("api_base number", {"api_base": 443}, Invalid, "api_base"),
    # scope
    ("scope leading space", {"scope": " read"}, Invalid, "scope"),
    ("scope trailing space", {"scope": "read "}, Invalid, "scope"),
    ("scope double space", {"scope": "read  write"}, Invalid, "scope"),
    ("scope empty", {"scope": ""}, Invalid, "scope"),
    ("scope only space", {"scope": " "}, Invalid, "scope"),
    ("scope tab", {"scope": "read\twrite"}, Invalid, "scope"),
    ("scope trailing newline", {"scope": "read\n"}, Invalid, "scope"),
    ("scope quote", {"scope": 'read"write'}, Invalid, "scope"),
    ("scope backslash", {"scope": "read\\write"}, Invalid, "scope"),
    ("scope non-ascii", {"scope": "lecture:é"}, Invalid, "scope"),
    ("scope list", {"scope": ["read", "write"]}, Invalid, "scope"),
    # other strings
    ("audience empty", {"audience": ""}, Invalid, "audience"),
    ("audience blank", {"audience": "   "}, Invalid, "audience"),
    ("audience number", {"audience": 1}, Invalid, "audience"),
    ("key_id empty", {"key_id": ""}, Invalid, "key_id"),
    ("token_endpoint_auth_method", {"token_endpoint_auth_method": "password"}, Invalid, "token_endpoint"),
    ("basic_auth_encoding", {"basic_auth_encoding": "latin-1"}, Invalid, "basic_auth_encoding"),
    ("signing_algorithm", {"signing_algorithm": "HS256"}, Invalid, "signing_algorithm"),
    # resource
    ("resource relative", {"resource": "api.example.com"}, Invalid, "resource"),
    ("resource empty string", {"resource": ""}, Invalid, "resource"),
    ("resource fragment", {"resource": "https://api.example.com/#x"}, Invalid, "resource"),
    ("resource space", {"resource": "https://api.example.com/a b"}, Invalid, "resource"),
    ("resource padded", {"resource": [" https://api.example.com"]}, Invalid, "resource"),
    (
        "resource duplicate",
        {"resource": ["https://a.example.com", "https://a.example.com"]},
        Invalid,
        "resource",
    ),
    ("resource number", {"resource": 5}, Invalid, "resource"),
    ("resource list of number", {"resource": ["https://a.example.com", 5]}, Invalid, "resource"),
    ("resource object", {"resource": {"uri": "https://a.example.com"}}, Invalid, "resource"),
    # numbers
    ("expiry_buffer negative", {"expiry_buffer_seconds": -1}, Invalid, "expiry_buffer_seconds"),
    ("expiry_buffer one day", {"expiry_buffer_seconds": 86400}, Invalid, "expiry_buffer_seconds"),
    ("expiry_buffer text", {"expiry_buffer_seconds": "soon"}, Invalid, "expiry_buffer_seconds"),
    ("default_expires_in zero", {"default_expires_in": 0}, Invalid, "default_expires_in"),
    ("default_expires_in negative", {"default_expires_in": -60}, Invalid, "default_expires_in"),
    ("default_expires_in > 1 year", {"default_expires_in": 31_536_001}, Invalid, "default_expires_in"),
    ("default_expires_in inf", {"default_expires_in": float("inf")}, Invalid, "default_expires_in"),
    ("timeout zero", {"timeout_seconds": 0}, Invalid, "timeout_seconds"),
    ("timeout negative", {"timeout_seconds": -5}, Invalid, "timeout_seconds"),
    ("timeout > 10 min", {"timeout_seconds": 601}, Invalid, "timeout_seconds"),
    ("timeout nan", {"timeout_seconds": float("nan")}, Invalid, "timeout_seconds"),
    ("timeout list", {"timeout_seconds": [5]}, Invalid, "timeout_seconds"),
    # retry
    ("retry attempts negative", {"retry": {"attempts": -1}}, Invalid, "retry.attempts"),
    ("retry attempts > 10", {"retry": {"attempts": 11}}, Invalid, "retry.attempts"),
    ("retry attempts fractional", {"retry": {"attempts": 2.5}}, Invalid, "retry.attempts"),
    ("retry initial_delay negative", {"retry": {"initial_delay": -0.1}}, Invalid, "retry.initial_delay"),
    (
        "retry initial_delay > 300",
        {"retry": {"initial_delay": 301, "max_delay": 400}},
        Invalid,
        "retry.initial_delay",
    ),
    ("retry max_delay > 3600", {"retry": {"max_delay": 3601}}, Invalid, "retry.max_delay"),
    ("retry initial > max", {"retry": {"initial_delay": 5, "max_delay": 1}}, Invalid, "retry"),
    ("retry unknown key", {"retry": {"attemps": 3}}, Invalid, "retry.attemps"),
    ("retry not an object", {"retry": "fast"}, Invalid, "retry"),
    # verify / booleans
    ("verify missing file", {"verify": "/nonexistent/ca-bundle.pem"}, Invalid, "verify"),
    ("verify empty", {"verify": ""}, Invalid, "verify"),
    ("verify directory", {"verify": "/"}, Invalid, "verify"),
    ("verify over-long path", {"verify": "c" * 5000}, Invalid, "verify"),
    ("verify NUL", {"verify": "ca\x00.pem"}, Invalid, "verify"),
    ("verify number", {"verify": 5}, Invalid, "verify"),
    ("allow_insecure_http text", {"allow_insecure_http": "sometimes"}, Invalid, "allow_insecure_http"),
    # private_key_jwt
    (
        "private_key_jwt without key",
        {"client_secret": None, "token_endpoint_auth_method": "private_key_jwt"},
        Invalid,
        "private_key",
    ),
    (
        "private_key_jwt with both keys",
        {
            "client_secret": None,
            "token_endpoint_auth_method": "private_key_jwt",
            "private_key": "-----BEGIN PRIVATE KEY-----",
            "private_key_path": "key.pem",
        },
        Invalid,
        "private_key",
    ),
    (
        "private_key_path empty",
        {"client_secret": None, "token_endpoint_auth_method": "private_key_jwt", "private_key_path": ""},
        Invalid,
        "private_key_path",
    ),
    ("private_key number", {"private_key": 7}, Invalid, "private_key"),
    # headers
    ("header name with space", {"headers": {"X Tenant": "a"}}, Invalid, "headers"),
    ("header name with colon", {"headers": {"X-Tenant:": "a"}}, Invalid, "headers"),
    ("header name empty", {"headers": {"": "a"}}, Invalid, "headers"),
    ("header name newline", {"headers": {"X-Tenant\n": "a"}}, Invalid, "headers"),
    ("header value CRLF", {"headers": {"X-Tenant": "a\r\nX-Injected: 1"}}, Invalid, "headers"),
    ("header value LF", {"headers": {"X-Tenant": "a\nb"}}, Invalid, "headers"),
    ("header value NUL", {"headers": {"X-Tenant": "a\x00"}}, Invalid, "headers"),
    ("header Authorization", {"headers": {"Authorization": "Bearer x"}}, Invalid, "headers"),
    ("header authorization lower", {"headers": {"authorization": "Basic x"}}, Invalid, "headers"),
    ("header api-key", {"headers": {"api-key": "x"}}, Invalid, "headers"),
    ("header API-Key", {"headers": {"API-Key": "x"}}, Invalid, "headers"),
    ("header x-api-key", {"headers": {"X-Api-Key": "x"}}, Invalid, "headers"),
    # api_style and Azure versions
    ("api_style unknown", {"api_style": "bedrock"}, Invalid, "api_style"),
    ("api_style number", {"api_style": 1}, Invalid, "api_style"),
    ("api_version without azure", {"api_version": "2024-10-21"}, Invalid, "api_version"),
    ("api_version malformed", {"api_style": "azure", "api_version": "2024/10/21"}, Invalid, "api_version"),
    (
        "responses_api_version on anthropic",
        {"api_style": "anthropic", "responses_api_version": "preview"},
        Invalid,
        "responses_api_version",
    ),
    ("header value number", {"headers": {"X-Tenant": 5}}, Invalid, "headers"),
    ("headers list", {"headers": ["X-Tenant: a"]}, Invalid, "headers"),
    # extra_token_params
    ("extra param empty name", {"extra_token_params": {"": "x"}}, Invalid, "extra_token_params"),
    ("extra param empty value", {"extra_token_params": {"tenant": ""}}, Invalid, "extra_token_params"),
    ("extra param number", {"extra_token_params": {"tenant": 1}}, Invalid, "extra_token_params"),
    ("extra params list", {"extra_token_params": [["tenant", "x"]]}, Invalid, "extra_token_params"),
]


@pytest.mark.parametrize(
    ("overrides", "cls", "field"),
    [pytest.param(o, c, f, id=i) for i, o, c, f in BAD_PROVIDER_VALUES],
)
def test_bad_provider_value(overrides: dict[str, Any], cls: type[Exception], field: str) -> None:
    assert_blames(provider_error(settings_of(**overrides)), cls, field)


@pytest.mark.parametrize("param", sorted(RESERVED_TOKEN_PARAMS))
def test_extra_token_params_reserved(param: str) -> None:
    error = provider_error(settings_of(extra_token_params={"tenant": "t", param: "x"}))
    assert_blames(error, Invalid, "extra_token_params")
    assert f"'{param}'" in str(error)


def test_extra_token_params_accepted() -> None:
    provider = provider_of(extra_token_params={"tenant": "contoso", "api-version": "2024-02-01"})
    assert provider.extra_token_params == {"tenant": "contoso", "api-version": "2024-02-01"}


@pytest.mark.parametrize(
    "headers",
    [{"AI-Resource-Group": "default"}, {"Ocp-Apim-Subscription-Key": "k", "X-Trace": ""}, {"X~Weird!#": "v"}],
)
def test_headers_accepted(headers: dict[str, str]) -> None:
    assert provider_of(headers=headers).header_values() == headers


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("scopes", "scope"),
        ("client_secert", "client_secret"),
        ("tokenurl", "token_url"),
        ("header", "headers"),
        ("audiance", "audience"),
        ("private_key_pth", "private_key_path"),
        ("timeout", "timeout_seconds"),
    ],
)
def test_unknown_provider_key_suggests_closest(key: str, suggestion: str) -> None:
    error = provider_error(settings_of(**{key: "x"}))
    assert type(error) is Config
    assert error.provider == PROVIDER
    assert f"unknown field '{key}'; did you mean '{suggestion}'?" in str(error)


def test_unknown_provider_key_without_close_match_lists_valid_fields() -> None:
    error = provider_error(settings_of(zzzzzzzz=1))
    assert type(error) is Config
    assert "unknown field 'zzzzzzzz'" in str(error)
    assert "valid fields:" in str(error)
    assert "token_url" in str(error)
    assert "provider_name" not in str(error)


@pytest.mark.parametrize(
    ("key", "suggestion"), [("oauth2_provider", "oauth2_providers"), ("caches", "cache"), ("Cache", "cache")]
)
def test_unknown_top_level_key_suggests_closest(key: str, suggestion: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        OAuth2Config.from_dict({"oauth2_providers": {PROVIDER: settings_of()}, key: {}})
    assert type(info.value) is Config
    assert f"unknown field '{key}'; did you mean '{suggestion}'?" in str(info.value)


def test_provider_name_field_is_rejected() -> None:
    error = provider_error(settings_of(provider_name="other"))
    assert type(error) is Config
    assert "'provider_name'" in str(error)
    assert error.provider == PROVIDER


@pytest.mark.parametrize("settings", [[], "https://idp.example.com", None, 3])
def test_provider_settings_must_be_an_object(settings: object) -> None:
    error = provider_error(settings)  # type: ignore[arg-type]
    assert type(error) is Config
    assert f"provider '{PROVIDER}'" in str(error)
    assert error.provider == PROVIDER


# ---------------------------------------------------------------------------------- URLs, loopback


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/token",
        "http://127.0.0.1:8080/token",
        "http://127.5.5.5/token",
        "http://[::1]:8080/token",
        "http://[::1]/token",
        "http://localhost:8080/token",
        "http://LOCALHOST/token",
        "http://localhost./token",
    ],
)
@pytest.mark.parametrize("field", ["token_url", "api_base"])
def test_plain_http_allowed_for_loopback(field: str, url: str) -> None:
    assert getattr(provider_of(**{field: url}), field) == url


@pytest.mark.parametrize("url", ["http://idp.example.com/token", "http://10.0.0.7:8080/token"])
@pytest.mark.parametrize("field", ["token_url", "api_base"])
def test_plain_http_allowed_everywhere_with_allow_insecure_http(field: str, url: str) -> None:
    assert getattr(provider_of(**{field: url}, allow_insecure_http=True), field) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token",
        "https://idp.example.com:8443/oauth2/token?tenant=a",
        "https://10.0.0.7/token",
        "https://[2001:db8::1]/token",
    ],
)
def test_https_accepted(url: str) -> None:
    assert provider_of(token_url=url).token_url == url


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("localhost.", True),
        ("0.0.0.0", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("localhost.example.com", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert _is_loopback_host(host) is loopback


# ------------------------------------------------------------------------------ resource, scope etc


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("https://api.example.com", ("https://api.example.com",)),
        (["https://a.example.com", "urn:example:llm"], ("https://a.example.com", "urn:example:llm")),
        ([], ()),
    ],
)
def test_resource_string_or_list(resource: object, expected: tuple[str, ...]) -> None:
    assert provider_of(resource=resource).resource == expected


@pytest.mark.parametrize("scope", ["openid", "api://6666/.default", "llm:chat llm:embeddings", "a!#[]~"])
def test_scope_accepted(scope: str) -> None:
    assert provider_of(scope=scope).scope == scope


def test_numbers_accept_boundaries() -> None:
    provider = provider_of(
        expiry_buffer_seconds=0,
        default_expires_in=31_536_000,
        timeout_seconds=600,
        retry={"attempts": 0, "initial_delay": 300, "max_delay": 300},
    )
    assert (provider.expiry_buffer_seconds, provider.default_expires_in, provider.timeout_seconds) == (
        0,
        31_536_000,
        600,
    )
    assert provider.retry == RetrySettings(attempts=0, initial_delay=300, max_delay=300)


def test_verify_accepts_ca_bundle_path_and_booleans(tmp_path: Path) -> None:
    bundle = write(tmp_path / "corp-ca.pem", "-----BEGIN CERTIFICATE-----\n")
    assert provider_of(verify=str(bundle)).verify == str(bundle)
    assert provider_of(verify=False).verify is False
    assert provider_of(verify=True).verify is True


# ---------------------------------------------------------------------------------- provider names


@pytest.mark.parametrize("name", ["acme_gw", "sap-aicore", "kong.internal", "A1", "9gateway"])
def test_provider_name_accepted(name: str) -> None:
    assert config_of({name: settings_of()}).provider(name).provider_name == name


@pytest.mark.parametrize(
    "name", ["", "my/provider", "/acme", "acme gw", " acme", "acme\n", "-acme", "_acme", ".acme", "acmé"]
)
def test_provider_name_rejected(name: str) -> None:
    assert_blames(provider_error(settings_of(), name=name), Invalid, "provider_name", name=name)


@pytest.mark.parametrize("name", ["openai", "anyscale"])
def test_builtin_names_are_left_to_registration(name: str) -> None:
    # Refusing LiteLLM's own names needs LiteLLM; the handler does it (tests/test_compat.py).
    assert config_of({name: settings_of()}).provider(name).provider_name == name


def test_unknown_provider_lookup_lists_configured_ones() -> None:
    config = config_of({"b_gw": settings_of(), "a_gw": settings_of()})
    with pytest.raises(OAuth2ConfigurationError) as info:
        config.provider("c_gw")
    assert type(info.value) is Config
    assert info.value.provider == "c_gw"
    assert "configured providers: a_gw, b_gw" in str(info.value)


# --------------------------------------------------------------------------------- private_key_jwt


def test_private_key_jwt_with_inline_key_needs_no_client_secret(pem: str) -> None:
    provider = provider_of(client_secret=None, token_endpoint_auth_method="private_key_jwt", private_key=pem)
    assert provider.client_secret is None
    assert provider.read_private_key() == pem.encode()


def test_private_key_jwt_with_key_file(tmp_path: Path, pem: str) -> None:
    key_file = write(tmp_path / "signing.pem", pem)
    provider = provider_of(
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key_path=str(key_file),
        signing_algorithm="ES256",
        key_id="kid-1",
    )
    assert provider.read_private_key() == pem.encode()


@pytest.mark.parametrize("path", ["does-not-exist.pem", "/", "key\x00.pem"])
def test_unreadable_private_key_path_is_a_configuration_error(path: str) -> None:
    provider = provider_of(
        client_secret=None, token_endpoint_auth_method="private_key_jwt", private_key_path=path
    )
    with pytest.raises(OAuth2ConfigurationError) as info:
        provider.read_private_key()
    assert type(info.value) is Config
    assert info.value.provider == PROVIDER
    assert "'private_key_path'" in str(info.value)


# ------------------------------------------------------------------------------------------- cache


@pytest.mark.parametrize(
    "url", ["redis://localhost:6379/0", "rediss://:pw@redis.example.com:6380/1", "unix:///run/redis.sock"]
)
def test_redis_cache_accepted(url: str) -> None:
    cache = config_of(cache={"type": "redis", "url": url, "key_prefix": "gw:", "encryption": False}).cache
    assert isinstance(cache, RedisCacheSettings)
    assert cache.url.get_secret_value() == url
    assert (cache.key_prefix, cache.encryption) == ("gw:", False)


@pytest.mark.parametrize(
    ("cache", "cls", "fragment"),
    [
        ({"type": "memcached"}, Invalid, "field 'type'"),
        ({"type": None}, Invalid, "field 'type'"),
        ({"type": "redis"}, Config, "field 'url' is required"),
        ({"type": "redis", "url": "http://redis.example.com"}, Invalid, "field 'url'"),
        ({"type": "redis", "url": "redis.example.com:6379"}, Invalid, "field 'url'"),
        ({"type": "redis", "url": 6379}, Invalid, "field 'url'"),
        ({"type": "redis", "url": "redis://h", "encryption": "yes please"}, Invalid, "field 'encryption'"),
        ({"type": "redis", "url": "redis://h", "key_prefix": 1}, Invalid, "field 'key_prefix'"),
        ({"type": "redis", "url": "redis://h", "prefix": "x"}, Config, "did you mean 'key_prefix'?"),
        ({"type": "memory", "url": "redis://h"}, Config, "unknown field 'url'"),
        ("memory", Config, "must be an object"),
        (["memory"], Config, "must be an object"),
    ],
)
def test_bad_cache(cache: object, cls: type[Exception], fragment: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of(cache=cache)
    assert type(info.value) is cls
    assert "cache" in str(info.value)
    assert fragment in str(info.value)


def test_metrics_default_to_litellm_service_logging_only() -> None:
    metrics = config_of().metrics
    assert (metrics.prometheus, metrics.opentelemetry, metrics.litellm_service_logging) == (
        False,
        False,
        True,
    )
    switched = config_of(metrics={"prometheus": True, "opentelemetry": True}).metrics
    assert switched.prometheus and switched.opentelemetry


def test_bad_metrics_are_all_reported_at_once_with_the_cache() -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of(
            metrics={"promethus": True, "opentelemetry": "maybe", "litellm_service_logging": [1]},
            cache={"type": "memcached"},
        )
    fields = {problem.field for problem in info.value.problems}
    assert fields == {
        "metrics.promethus",
        "metrics.opentelemetry",
        "metrics.litellm_service_logging",
        "cache.type",
    }
    assert "did you mean 'prometheus'?" in str(info.value)
    assert "maybe" not in str(info.value)


@pytest.mark.parametrize("metrics", ["prometheus", ["prometheus"], None])
def test_metrics_must_be_an_object(metrics: object) -> None:
    with pytest.raises(OAuth2ConfigurationError, match="metrics: must be an object") as info:
        config_of(metrics=metrics)
    assert info.value.field == "metrics"


# ---------------------------------------------------------------------------------------- cache_key


def test_cache_key_differs_by_scope() -> None:
    config = config_of({"read_gw": settings_of(scope="llm:read"), "write_gw": settings_of(scope="llm:write")})
    assert config.provider("read_gw").cache_key != config.provider("write_gw").cache_key


def test_cache_key_shared_by_identical_settings_under_two_names() -> None:
    config = config_of({"gw_one": settings_of(scope="llm:chat"), "gw_two": settings_of(scope="llm:chat")})
    assert config.provider("gw_one").cache_key == config.provider("gw_two").cache_key


@pytest.mark.parametrize(
    "change",
    [
        {"token_url": "https://other-idp.example.com/oauth2/token"},
        {"client_id": "other-client"},
        {"scope": "llm:chat"},
        {"audience": "https://llm.example.com"},
        {"resource": "https://llm.example.com"},
        {"extra_token_params": {"tenant": "a"}},
        {"refresh_token": REFRESH},
        # One token client serves every provider of a key: how the request is made joins it too.
        {"timeout_seconds": 30},
        {"retry": {"attempts": 1}},
    ],
)
def test_cache_key_changes_with_what_changes_the_token(change: dict[str, Any]) -> None:
    assert provider_of(**change).cache_key != provider_of().cache_key


@pytest.mark.parametrize(
    "change", [{"api_base": "https://gw.example.com/v1"}, {"headers": {"X-Tenant": "a"}}]
)
def test_cache_key_ignores_what_does_not_change_the_token(change: dict[str, Any]) -> None:
    assert provider_of(**change).cache_key == provider_of().cache_key


def test_cache_key_separates_refresh_tokens() -> None:
    # Two refresh tokens are two grants (often two users): sharing a token would mix them up.
    config = config_of(
        {
            "alice_gw": settings_of(refresh_token=REFRESH),
            "bob_gw": settings_of(refresh_token=REFRESH + "-bob"),
        }
    )
    assert config.provider("alice_gw").cache_key != config.provider("bob_gw").cache_key


def test_cache_key_holds_nothing_in_clear() -> None:
    provider = provider_of(
        client_id="very-identifiable-client", scope="llm:chat", refresh_token=REFRESH, audience="aud-x"
    )
    key = provider.cache_key
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    for clear in (
        "very-identifiable-client",
        "idp.example.com",
        "oauth2",
        "llm:chat",
        REFRESH,
        SECRET,
        "aud-x",
    ):
        assert clear not in key


# ------------------------------------------------------------------------------- env var references


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("T_CLIENT_ID", "T_SECRET", "T_GROUP", "T_TENANT", "T_RESOURCE", "T_ATTEMPTS", "T_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_env_reference_top_level_fields(env: pytest.MonkeyPatch) -> None:
    env.setenv("T_CLIENT_ID", "client-from-env")
    env.setenv("T_SECRET", SECRET)
    provider = provider_of(client_id="os.environ/T_CLIENT_ID", client_secret="os.environ/T_SECRET")
    assert provider.client_id == "client-from-env"
    assert provider.client_secret is not None
    assert provider.client_secret.get_secret_value() == SECRET


def test_env_reference_nested_values(env: pytest.MonkeyPatch) -> None:
    env.setenv("T_GROUP", "team-a")
    env.setenv("T_TENANT", "contoso")
    env.setenv("T_RESOURCE", "https://llm.example.com")
    env.setenv("T_ATTEMPTS", "5")
    provider = provider_of(
        headers={"AI-Resource-Group": "os.environ/T_GROUP"},
        extra_token_params={"tenant": "os.environ/T_TENANT"},
        resource=["os.environ/T_RESOURCE", "urn:example:other"],
        retry={"attempts": "os.environ/T_ATTEMPTS", "initial_delay": 0.5, "max_delay": 2},
    )
    assert provider.header_values() == {"AI-Resource-Group": "team-a"}
    assert provider.extra_token_params == {"tenant": "contoso"}
    assert provider.resource == ("https://llm.example.com", "urn:example:other")
    # The variable's text becomes a number; numbers given as numbers are left alone.
    assert provider.retry == RetrySettings(attempts=5, initial_delay=0.5, max_delay=2)


def test_env_reference_in_resource_string(env: pytest.MonkeyPatch) -> None:
    env.setenv("T_RESOURCE", "https://llm.example.com")
    assert provider_of(resource="os.environ/T_RESOURCE").resource == ("https://llm.example.com",)


def test_env_reference_redis_url(env: pytest.MonkeyPatch) -> None:
    url = f"rediss://:{REDIS_PASSWORD}@redis.example.com:6380/0"
    env.setenv("T_REDIS_URL", url)
    config = config_of(cache={"type": "redis", "url": "os.environ/T_REDIS_URL"})
    assert isinstance(config.cache, RedisCacheSettings)
    assert config.cache.url.get_secret_value() == url
    assert REDIS_PASSWORD not in repr(config)
    assert REDIS_PASSWORD not in config.model_dump_json()


@pytest.mark.parametrize(
    "value", ["prefix os.environ/T_SECRET", "OS.ENVIRON/T_SECRET", "os.environ.T_SECRET", "os.environ"]
)
def test_only_a_leading_env_prefix_is_a_reference(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("T_SECRET", "resolved")
    provider = provider_of(client_secret=value)
    assert provider.client_secret is not None
    assert provider.client_secret.get_secret_value() == value


@pytest.mark.parametrize(
    ("overrides", "field", "var"),
    [
        ({"client_id": "os.environ/T_CLIENT_ID"}, "client_id", "T_CLIENT_ID"),
        ({"client_secret": "os.environ/T_SECRET"}, "client_secret", "T_SECRET"),
        ({"headers": {"AI-Resource-Group": "os.environ/T_GROUP"}}, "headers.AI-Resource-Group", "T_GROUP"),
        ({"extra_token_params": {"tenant": "os.environ/T_TENANT"}}, "extra_token_params.tenant", "T_TENANT"),
        ({"resource": ["https://a.example.com", "os.environ/T_RESOURCE"]}, "resource[1]", "T_RESOURCE"),
        ({"retry": {"attempts": "os.environ/T_ATTEMPTS"}}, "retry.attempts", "T_ATTEMPTS"),
        ({"client_secret": "os.environ/"}, "client_secret", ""),
    ],
)
def test_unset_env_reference(
    env: pytest.MonkeyPatch, overrides: dict[str, Any], field: str, var: str
) -> None:
    # A set neighbour must not leak into the message either.
    env.setenv("T_OTHER_SECRET", SECRET)
    error = provider_error(settings_of(**{"client_secret": "os.environ/T_OTHER_SECRET", **overrides}))
    assert type(error) is Config
    assert error.provider == PROVIDER
    assert f"provider '{PROVIDER}': field '{field}' refers to environment variable '{var}'" in str(error)
    assert SECRET not in str(error)


def test_unset_env_reference_in_cache(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of(cache={"type": "redis", "url": "os.environ/T_REDIS_URL"})
    assert type(info.value) is Config
    assert "cache: field 'url' refers to environment variable 'T_REDIS_URL'" in str(info.value)


def test_env_value_that_is_invalid_is_blamed_without_echo(env: pytest.MonkeyPatch) -> None:
    env.setenv("T_SECRET", f"http://{SECRET}.example.com/token")
    error = provider_error(settings_of(token_url="os.environ/T_SECRET"))
    assert_blames(error, Invalid, "token_url")
    assert SECRET not in str(error)


# ---------------------------------------------------------------------------------------- secrecy


def secret_provider(pem: str) -> dict[str, dict[str, Any]]:
    return {
        "basic_gw": settings_of(refresh_token=REFRESH),
        "jwt_gw": settings_of(
            client_secret=None, token_endpoint_auth_method="private_key_jwt", private_key=pem
        ),
    }


def assert_no_secret(text: str, pem: str) -> None:
    for secret in (SECRET, REFRESH, REDIS_PASSWORD, str(NUMERIC_SECRET), pem_marker(pem)):
        assert secret not in text


def test_secrets_absent_from_repr_str_and_dumps(pem: str) -> None:
    config = config_of(
        secret_provider(pem), cache={"type": "redis", "url": f"redis://:{REDIS_PASSWORD}@redis.example.com"}
    )
    outputs = [repr(config), str(config), config.model_dump_json(), str(config.model_dump())]
    for provider in config.oauth2_providers.values():
        outputs += [repr(provider), str(provider), provider.model_dump_json(), str(provider.model_dump())]
    for text in outputs:
        assert_no_secret(text, pem)
    # ... while the values themselves are intact.
    basic = config.provider("basic_gw")
    assert basic.client_secret is not None
    assert basic.refresh_token is not None
    assert (basic.client_secret.get_secret_value(), basic.refresh_token.get_secret_value()) == (
        SECRET,
        REFRESH,
    )


def full_error_text(error: BaseException) -> str:
    """What a log would show: message, repr, and the formatted traceback with its chained causes."""
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


SECRET_IN_BAD_PLACE: list[tuple[str, dict[str, Any]]] = [
    ("client_secret number", {"client_secret": NUMERIC_SECRET}),
    ("client_secret list", {"client_secret": [SECRET]}),
    ("client_secret object", {"client_secret": {"value": SECRET}}),
    ("refresh_token number", {"refresh_token": NUMERIC_SECRET}),
    ("refresh_token list", {"refresh_token": [REFRESH]}),
    ("refresh_token bool-ish object", {"refresh_token": {REFRESH: True}}),
    ("private_key int", {"private_key": NUMERIC_SECRET}),
    ("client_id list", {"client_id": [SECRET]}),
    ("token_url is secret", {"token_url": SECRET}),
    ("token_url http with secret", {"token_url": f"http://idp.example.com/{SECRET}"}),
    ("token_url secret fragment", {"token_url": f"https://idp.example.com/#{SECRET}"}),
    ("token_url secret userinfo", {"token_url": f"https://client:{SECRET}@idp.example.com/"}),
    ("api_base is secret", {"api_base": SECRET}),
    ("scope secret trailing space", {"scope": f"{SECRET} "}),
    ("scope secret with quote", {"scope": f'"{SECRET}'}),
    ("audience secret list", {"audience": [SECRET]}),
    ("resource secret", {"resource": SECRET}),
    ("resource secret fragment", {"resource": f"https://a.example.com#{SECRET}"}),
    ("resource secret twice", {"resource": [f"urn:{SECRET}", f"urn:{SECRET}"]}),
    ("verify secret", {"verify": SECRET}),
    ("verify long secret", {"verify": "x" * 300 + SECRET}),
    ("key_id secret list", {"key_id": [SECRET]}),
    ("method secret", {"token_endpoint_auth_method": SECRET}),
    ("algorithm secret", {"signing_algorithm": SECRET}),
    ("encoding secret", {"basic_auth_encoding": SECRET}),
    ("header value CRLF secret", {"headers": {"X-Key": f"{SECRET}\r\n"}}),
    ("header Authorization secret", {"headers": {"Authorization": f"Bearer {SECRET}"}}),
    ("header value number", {"headers": {"X-Key": NUMERIC_SECRET}}),
    ("extra param reserved secret", {"extra_token_params": {"client_secret": SECRET}}),
    ("extra param number", {"extra_token_params": {"x": NUMERIC_SECRET}}),
    ("timeout secret", {"timeout_seconds": SECRET}),
    ("expiry secret", {"expiry_buffer_seconds": SECRET}),
    ("retry secret", {"retry": {"attempts": SECRET}}),
    ("retry secret number", {"retry": {"attempts": NUMERIC_SECRET}}),
    ("allow_insecure_http secret", {"allow_insecure_http": SECRET}),
]


@pytest.mark.parametrize("overrides", [pytest.param(o, id=i) for i, o in SECRET_IN_BAD_PLACE])
def test_secret_never_in_error_message(overrides: dict[str, Any], pem: str) -> None:
    error = provider_error(settings_of(**overrides))
    assert isinstance(error, OAuth2ConfigurationError)
    assert_no_secret(full_error_text(error), pem)


PEM_IN_BAD_PLACE: dict[str, Any] = {
    "private_key list": lambda pem: {"private_key": [pem]},
    "private_key with path too": lambda pem: {"private_key": pem, "private_key_path": "k.pem"},
    "token_url": lambda pem: {"token_url": pem},
    "api_base": lambda pem: {"api_base": pem},
    "scope": lambda pem: {"scope": pem},
    "verify": lambda pem: {"verify": pem},
    "audience list": lambda pem: {"audience": [pem]},
    "key_id object": lambda pem: {"key_id": {"pem": pem}},
    "resource": lambda pem: {"resource": pem},
    "header value": lambda pem: {"headers": {"X-Key": pem}},
    "signing_algorithm": lambda pem: {"signing_algorithm": pem},
}


@pytest.mark.parametrize("make", PEM_IN_BAD_PLACE.values(), ids=PEM_IN_BAD_PLACE.keys())
def test_pem_never_in_error_message(make: Any, pem: str) -> None:
    settings = settings_of(client_secret=None, token_endpoint_auth_method="private_key_jwt", private_key=pem)
    error = provider_error({**settings, **make(pem)})
    assert_no_secret(full_error_text(error), pem)


@pytest.mark.parametrize(
    "cache",
    [
        {"type": "redis", "url": f"http://:{REDIS_PASSWORD}@redis.example.com"},
        {"type": REDIS_PASSWORD},
        {"type": "redis", "url": [REDIS_PASSWORD]},
    ],
)
def test_redis_password_never_in_error_message(cache: dict[str, Any], pem: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of(cache=cache)
    assert_no_secret(full_error_text(info.value), pem)


@pytest.mark.parametrize(
    ("document", "suffix"),
    [
        ('{"oauth2_providers": {"a": {"client_secret": "' + SECRET + '" "x"}}}', ".json"),
        ('{"oauth2_providers": {"a": {"client_secret": "' + SECRET + '\u0001"}}}', ".json"),
        ('{"oauth2_providers": {"a": {"client_secret": "' + SECRET + '", "client_secret": "x"}}}', ".json"),
        ("oauth2_providers:\n  a:\n    client_secret: " + SECRET + "\n   bad: [\n", ".yaml"),
        ("oauth2_providers:\n  a:\n    client_secret: '" + SECRET + "\n", ".yaml"),
        ("oauth2_providers:\n  a:\n    client_secret: !!int " + SECRET + "\n", ".yaml"),
    ],
)
def test_secret_never_in_parse_error(tmp_path: Path, document: str, suffix: str, pem: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(write(tmp_path / f"litellm_config{suffix}", document))
    assert_no_secret(full_error_text(info.value), pem)


# ----------------------------------------------------------------------------------- load_config


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    return tmp_path


def test_load_config_precedence(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(in_tmp / "litellm_config.json", valid_document("from_cwd"))
    write(in_tmp / "env.json", valid_document("from_env"))
    write(in_tmp / "arg.json", valid_document("from_arg"))
    assert list(load_config().oauth2_providers) == ["from_cwd"]
    monkeypatch.setenv(CONFIG_ENV_VAR, str(in_tmp / "env.json"))
    assert list(load_config().oauth2_providers) == ["from_env"]
    assert list(load_config(in_tmp / "arg.json").oauth2_providers) == ["from_arg"]
    assert list(load_config(str(in_tmp / "arg.json")).oauth2_providers) == ["from_arg"]


def test_empty_env_var_falls_back_to_cwd(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(in_tmp / "litellm_config.json", valid_document("from_cwd"))
    monkeypatch.setenv(CONFIG_ENV_VAR, "")
    assert config_path() == Path("litellm_config.json")
    assert list(load_config().oauth2_providers) == ["from_cwd"]


def test_missing_default_file(in_tmp: Path) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config()
    assert type(info.value) is Config
    assert "'litellm_config.json' not found" in str(info.value)
    assert CONFIG_ENV_VAR in str(info.value)


def test_missing_file_named_by_env_var(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(in_tmp / "litellm_config.json", valid_document())
    monkeypatch.setenv(CONFIG_ENV_VAR, str(in_tmp / "nope.json"))
    with pytest.raises(OAuth2ConfigurationError, match=r"nope\.json' not found"):
        load_config()


def test_missing_file_named_by_argument(in_tmp: Path) -> None:
    write(in_tmp / "litellm_config.json", valid_document())
    with pytest.raises(OAuth2ConfigurationError, match=r"nope\.json' not found"):
        load_config(in_tmp / "nope.json")


def test_unreadable_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(tmp_path)
    assert type(info.value) is Config
    assert "cannot be read" in str(info.value)
    assert isinstance(info.value.original_error, OSError)


def test_path_with_nul_is_a_configuration_error() -> None:
    with pytest.raises(OAuth2ConfigurationError, match="cannot be read"):
        load_config("litellm\x00config.json")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root reads a chmod 000 file anyway; the directory case covers the unreadable branch",
)
def test_unreadable_file_permissions(tmp_path: Path) -> None:
    path = write(tmp_path / "litellm_config.json", valid_document())
    path.chmod(0)
    try:
        with pytest.raises(OAuth2ConfigurationError, match="cannot be read"):
            load_config(path)
    finally:
        path.chmod(0o600)


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '{\n  "oauth2_providers": {\n    "acme": {,\n')
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(path)
    assert type(info.value) is Config
    assert str(path) in str(info.value)
    assert "invalid JSON at line 3, column 14" in str(info.value)


@pytest.mark.parametrize(
    "document", ["[]", '"oauth2_providers"', "1", "null", "true", '[{"oauth2_providers": {}}]']
)
def test_top_level_must_be_an_object(tmp_path: Path, document: str) -> None:
    with pytest.raises(OAuth2ConfigurationError, match="top level must be a JSON object"):
        load_config(write(tmp_path / "c.json", document))


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("{}", "missing 'oauth2_providers'"),
        ('{"cache": {"type": "memory"}}', "missing 'oauth2_providers'"),
        ('{"oauth2_providers": {}}', "must be a non-empty object"),
        ('{"oauth2_providers": []}', "must be a non-empty object"),
        ('{"oauth2_providers": null}', "must be a non-empty object"),
        ('{"oauth2_providers": "acme"}', "must be a non-empty object"),
    ],
)
def test_providers_section_required_and_non_empty(tmp_path: Path, document: str, fragment: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(write(tmp_path / "c.json", document))
    assert type(info.value) is Config
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("document", "key"),
    [
        (
            '{"oauth2_providers": {"acme": {"client_id": "a", "client_id": "b",'
            ' "client_secret": "s", "token_url": "https://i.example.com"}}}',
            "client_id",
        ),
        ('{"oauth2_providers": {"acme": {}, "acme": {}}}', "acme"),
        ('{"oauth2_providers": {"acme": {}}, "oauth2_providers": {"b": {}}}', "oauth2_providers"),
    ],
)
def test_duplicate_json_keys_rejected(tmp_path: Path, document: str, key: str) -> None:
    path = write(tmp_path / "c.json", document)
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(path)
    assert type(info.value) is Config
    assert f"duplicate key '{key}'" in str(info.value)
    assert str(path) in str(info.value)


YAML_DOCUMENT = """\
# Azure APIM in front of an OpenAI-compatible API
oauth2_providers:
  acme_gw:
    client_id: acme-client
    client_secret: os.environ/T_SECRET
    token_url: https://idp.example.com/oauth2/token
    scope: "api://acme/.default"
    headers:
      AI-Resource-Group: default
cache:
  type: memory
"""


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_yaml_accepted(tmp_path: Path, env: pytest.MonkeyPatch, suffix: str) -> None:
    env.setenv("T_SECRET", SECRET)
    provider = load_config(write(tmp_path / f"litellm_config{suffix}", YAML_DOCUMENT)).provider(PROVIDER)
    assert provider.scope == "api://acme/.default"
    assert provider.header_values() == {"AI-Resource-Group": "default"}
    assert provider.client_secret is not None
    assert provider.client_secret.get_secret_value() == SECRET


def test_yaml_is_not_parsed_for_json_suffix(tmp_path: Path) -> None:
    with pytest.raises(OAuth2ConfigurationError, match="invalid JSON at line 1"):
        load_config(write(tmp_path / "litellm_config.json", YAML_DOCUMENT))


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("oauth2_providers:\n  acme: {}\n  acme: {}\n", "duplicate key 'acme'"),
        ("oauth2_providers:\n  acme:\n    scope: a\n    scope: b\n", "duplicate key 'scope'"),
        ("oauth2_providers:\n  acme: [\n", "invalid YAML at line"),
        ("oauth2_providers: {\n  acme: x\n  : : :\n", "invalid YAML at line"),
        ("base: &b {client_id: x}\noauth2_providers:\n  acme: *b\n", "aliases"),
        ("oauth2_providers:\n  acme:\n    issued: 2001-02-30\n", "invalid YAML"),
        ("oauth2_providers:\n  acme:\n    ? [a, b]\n    : 1\n", "invalid YAML"),
        ("oauth2_providers:\n  acme:\n    n: !!int nope\n", "invalid YAML"),
        ("oauth2_providers:\n  acme: !!python/object:os.system {}\n", "invalid YAML"),
        ("- oauth2_providers\n", "top level must be"),
        ("", "top level must be"),
    ],
)
def test_bad_yaml(tmp_path: Path, document: str, fragment: str) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(write(tmp_path / "c.yaml", document))
    assert type(info.value) is Config
    assert fragment in str(info.value)


def test_yaml_alias_bomb_rejected_quickly(tmp_path: Path) -> None:
    lines = ['l0: &l0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    with pytest.raises(OAuth2ConfigurationError, match="aliases"):
        load_config(write(tmp_path / "bomb.yaml", "\n".join(lines)))


@pytest.mark.parametrize(
    ("content", "offset"), [(b"\xff\xfe{}", 0), (b'{"oauth2_providers": "\xe9"}', 22), (b"{}\x80", 2)]
)
def test_non_utf8_file(tmp_path: Path, content: bytes, offset: int) -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(write(tmp_path / "c.json", content))
    assert type(info.value) is Config
    assert f"is not UTF-8 text (bad byte at offset {offset})" in str(info.value)


def test_utf8_bom_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "c.json", b"\xef\xbb\xbf" + valid_document().encode()))
    assert list(config.oauth2_providers) == [PROVIDER]


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_within_limit_reaches_validation(tmp_path: Path) -> None:
    # Depth 1 = the top-level object; the headers value adds 3 more levels.
    document = {"oauth2_providers": {PROVIDER: settings_of(headers={"X": nested(MAX_JSON_DEPTH - 4)})}}
    with pytest.raises(OAuth2ValidationError, match="headers"):
        load_config(write(tmp_path / "c.json", json.dumps(document)))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_nesting_too_deep(tmp_path: Path, suffix: str) -> None:
    document = {"oauth2_providers": {PROVIDER: settings_of(headers={"X": nested(MAX_JSON_DEPTH - 3)})}}
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(write(tmp_path / f"c{suffix}", json.dumps(document)))
    assert type(info.value) is Config
    assert f"nested deeper than {MAX_JSON_DEPTH} levels" in str(info.value)


@pytest.mark.parametrize(("suffix", "depth"), [(".json", 100_000), (".yaml", 500)])
def test_nesting_beyond_the_parser_recursion_limit(tmp_path: Path, suffix: str, depth: int) -> None:
    # The parsers recurse per level: past sys.getrecursionlimit() they raise RecursionError.
    with pytest.raises(OAuth2ConfigurationError, match="nested too deeply"):
        load_config(write(tmp_path / f"c{suffix}", "[" * depth))


def test_file_too_large(tmp_path: Path) -> None:
    document = valid_document()
    path = write(tmp_path / "c.json", document + " " * (MAX_CONFIG_BYTES + 1 - len(document)))
    with pytest.raises(OAuth2ConfigurationError) as info:
        load_config(path)
    assert type(info.value) is Config
    assert f"larger than {MAX_CONFIG_BYTES} bytes" in str(info.value)


def test_file_at_size_limit_accepted(tmp_path: Path) -> None:
    document = valid_document()
    path = write(tmp_path / "c.json", document + " " * (MAX_CONFIG_BYTES - len(document)))
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert list(load_config(path).oauth2_providers) == [PROVIDER]


def test_huge_integer_literal(tmp_path: Path) -> None:
    document = valid_document()[:-3] + ', "timeout_seconds": ' + "9" * 5000 + "}}}"
    with pytest.raises(OAuth2ConfigurationError, match="invalid JSON"):
        load_config(write(tmp_path / "c.json", document))


def test_parse_document_source_in_messages() -> None:
    with pytest.raises(OAuth2ConfigurationError, match=r"^inline: invalid JSON at line 1, column 1"):
        _parse_document("", source="inline")


# ----------------------------------------------------------------------------------- sample configs

SAMPLE_NAMES = {
    "single_provider.json",
    "multiple_providers.json",
    "env_references.json",
    "client_secret_post.json",
    "private_key_jwt.json",
    "audience_resource.json",
    "redis_cache.json",
}


def sample_env(pem: str) -> dict[str, str]:
    return {
        "AZURE_APIM_CLIENT_SECRET": "example-apim-secret",
        "APIGEE_CLIENT_SECRET": "example-apigee-secret",
        "AICORE_CLIENT_ID": "sb-example!b1|aicore!b540",
        "AICORE_CLIENT_SECRET": "example-aicore-secret",
        "AICORE_RESOURCE_GROUP": "default",
        "KONG_CLIENT_ID": "example-kong-consumer",
        "KONG_CLIENT_SECRET": "example-kong-secret",
        "AUTH0_CLIENT_SECRET": "example-auth0-secret",
        "RESOURCE_GATEWAY_CLIENT_SECRET": "example-resource-secret",
        "MY_PROVIDER_PRIVATE_KEY": pem,
        "REDIS_URL": "rediss://:example-password@redis.example.com:6380/0",
        "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        "AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
        "TOKEN_CACHE_KEY": "example-token-cache-key-of-32-characters-or-more",
    }


@pytest.fixture
def sample_vars(monkeypatch: pytest.MonkeyPatch, pem: str) -> dict[str, str]:
    variables = sample_env(pem)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def test_every_sample_is_present() -> None:
    assert {path.name for path in SAMPLES.glob("*.json")} >= SAMPLE_NAMES


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.json")), ids=lambda path: path.name)
def test_sample_config_validates(path: Path, sample_vars: dict[str, str]) -> None:
    text = path.read_text()
    referenced = set(re.findall(r"os\.environ/([A-Za-z0-9_]+)", text))
    assert referenced <= set(sample_vars), f"add {referenced - set(sample_vars)} to sample_env()"
    config = load_config(path)
    assert config.oauth2_providers
    for provider in config.oauth2_providers.values():
        assert provider.token_url.startswith("https://")
        assert provider.api_base is None or provider.api_base.startswith("https://")
        assert not provider.allow_insecure_http
        assert "os.environ/" not in provider.model_dump_json()


def test_sample_env_references_resolve(sample_vars: dict[str, str]) -> None:
    config = load_config(SAMPLES / "env_references.json")
    kong = config.provider("kong_gateway")
    assert kong.client_id == sample_vars["KONG_CLIENT_ID"]
    assert kong.client_secret is not None
    assert kong.client_secret.get_secret_value() == sample_vars["KONG_CLIENT_SECRET"]
    assert config.provider("sap_aicore").header_values() == {"AI-Resource-Group": "default"}


def test_sample_private_key_jwt_loads_a_usable_key(sample_vars: dict[str, str]) -> None:
    provider = next(iter(load_config(SAMPLES / "private_key_jwt.json").oauth2_providers.values()))
    assert provider.token_endpoint_auth_method == "private_key_jwt"
    assert provider.client_secret is None
    key = serialization.load_pem_private_key(provider.read_private_key(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)


def test_sample_redis_cache(sample_vars: dict[str, str]) -> None:
    cache = load_config(SAMPLES / "redis_cache.json").cache
    assert isinstance(cache, RedisCacheSettings)
    assert cache.url.get_secret_value() == sample_vars["REDIS_URL"]


def test_sample_missing_env_var_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_APIM_CLIENT_SECRET", raising=False)
    with pytest.raises(OAuth2ConfigurationError, match="'AZURE_APIM_CLIENT_SECRET', which is not set"):
        load_config(SAMPLES / "single_provider.json")


# ------------------------------------------------------------------------------- property-based

FIELDS = sorted(set(ProviderSettings.model_fields) - {"provider_name"})
SPECIAL_STRINGS = [
    "",
    " ",
    "os.environ/LITELLM_OAUTH2_SURELY_UNSET",
    "os.environ/",
    "https://idp.example.com/token",
    "http://idp.example.com/token",
    "http://[::1",
    "redis://localhost",
    "private_key_jwt",
    "client_secret_post",
    "\x00",
    "a\r\nb",
    "/",
    "x" * 300,
    "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(SPECIAL_STRINGS)
)
keys = st.sampled_from([*FIELDS, "type", "url", "oauth2_providers", "cache", "attempts"]) | st.text(
    max_size=8
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=8,
)
provider_names = st.sampled_from(["acme_gw", "openai", "a/b", ""]) | st.text(max_size=8)
documents = (
    json_values
    | st.fixed_dictionaries(
        {"oauth2_providers": st.dictionaries(provider_names, json_values, max_size=3)},
        optional={"cache": json_values},
    )
    | st.fixed_dictionaries(
        {
            "oauth2_providers": st.dictionaries(
                provider_names, st.dictionaries(keys, json_values, max_size=6), max_size=2
            )
        }
    )
)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(document=documents)
def test_random_documents_only_raise_configuration_errors(document: object) -> None:
    with contextlib.suppress(OAuth2ConfigurationError):
        OAuth2Config.from_dict(document)


@FAST
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=3))
def test_random_field_values_only_raise_configuration_errors(overrides: dict[str, Any]) -> None:
    try:
        config_of({PROVIDER: settings_of(**overrides)})
    except OAuth2ConfigurationError as error:
        assert error.provider == PROVIDER


@FAST
@given(cache=json_values)
def test_random_cache_sections_only_raise_configuration_errors(cache: object) -> None:
    with contextlib.suppress(OAuth2ConfigurationError):
        config_of(cache=cache)


secret_shaped = st.sampled_from(
    [
        SECRET,
        f"{SECRET} ",
        f" {SECRET}",
        f"{SECRET}\n",
        f"https://{SECRET}#",
        f"http://{SECRET}.example.com",
        f"urn:{SECRET}#x",
        f'"{SECRET}"',
        "x" * 300 + SECRET,
    ]
)
secret_values = st.recursive(
    secret_shaped | st.just(NUMERIC_SECRET),
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.sampled_from(["k", "X-Key"]), children)
    ),
    max_leaves=3,
)


@FAST
@given(field=st.sampled_from(FIELDS), value=secret_values)
def test_secret_in_any_field_never_echoed(field: str, value: object) -> None:
    try:
        config_of({PROVIDER: settings_of(**{field: value})})
    except OAuth2ConfigurationError as error:
        text = full_error_text(error)
        assert SECRET not in text
        assert str(NUMERIC_SECRET) not in text


@pytest.fixture(scope="module")
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


@FAST
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".json", ".yaml", ".yml"]))
def test_random_bytes_file_only_raises_configuration_errors(
    scratch_dir: Path, content: bytes, suffix: str
) -> None:
    with contextlib.suppress(OAuth2ConfigurationError):
        load_config(write(scratch_dir / f"random{suffix}", content))


@FAST
@given(document=documents, as_yaml=st.booleans())
def test_random_documents_through_a_file(scratch_dir: Path, document: object, as_yaml: bool) -> None:
    text = yaml.safe_dump(document) if as_yaml else json.dumps(document)
    with contextlib.suppress(OAuth2ConfigurationError):
        load_config(write(scratch_dir / ("doc.yaml" if as_yaml else "doc.json"), text))


# ------------------------------------------------------------------------------ every problem at once


def test_every_invalid_field_of_every_provider_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KNOWN_UNSET_VAR", raising=False)
    document = {
        "oauth2_providers": {
            "alpha": settings_of(token_url="ftp://idp", scope='a"b', timeout_seconds=0),
            "beta": settings_of(client_secret=None, scopes="x", audience="os.environ/KNOWN_UNSET_VAR"),
            "gamma": settings_of(),
        },
        "cache": {"type": "redis", "url": "http://cache", "key_prefx": "p"},
        "cahce": {},
    }
    with pytest.raises(OAuth2ConfigurationError) as info:
        OAuth2Config.from_dict(document, source="litellm_config.json")
    error = info.value
    found = [(problem.provider, problem.field) for problem in error.problems]
    assert sorted(found, key=str) == sorted(
        [
            (None, "cahce"),
            ("alpha", "token_url"),
            ("alpha", "scope"),
            ("alpha", "timeout_seconds"),
            ("beta", "scopes"),
            ("beta", "audience"),
            ("beta", "client_secret"),
            (None, "cache.key_prefx"),
            (None, "cache.url"),
        ],
        key=str,
    ), found
    # Unknown fields and unset variables are not bad values: the whole is a configuration error.
    assert type(error) is Config and error.provider is None
    message = str(error)
    assert message.startswith("litellm_config.json: 9 problems:\n")
    for problem in error.problems:
        assert problem.message.removeprefix("litellm_config.json: ") in message
    assert (
        "provider 'alpha': field 'token_url'" in message
        and "provider 'beta': unknown field 'scopes'" in message
    )
    assert "provider 'gamma'" not in message and SECRET not in message


def test_problems_that_are_all_bad_values_make_a_validation_error() -> None:
    with pytest.raises(OAuth2ConfigurationError) as info:
        config_of({"a_gw": settings_of(scope=" x"), "b_gw": settings_of(token_url="ftp://idp")})
    assert type(info.value) is Invalid
    assert [(p.provider, p.field, type(p)) for p in info.value.problems] == [
        ("a_gw", "scope", Invalid),
        ("b_gw", "token_url", Invalid),
    ]


def test_problems_of_one_provider_name_it() -> None:
    error = provider_error(settings_of(client_id="", scope=" x", retry={"attempts": -1}))
    assert type(error) is Invalid and error.provider == PROVIDER
    assert [p.field for p in error.problems] == ["client_id", "scope", "retry.attempts"]


def test_a_field_is_blamed_once() -> None:
    # An unset variable for client_secret also leaves client_secret missing: one problem, the first.
    error = provider_error(settings_of(client_secret="os.environ/KNOWN_UNSET_VAR", scope=" x"))
    assert [p.field for p in error.problems] == ["client_secret", "scope"]
    assert "KNOWN_UNSET_VAR" in str(error) and "is required for" not in str(error)


def test_a_single_problem_keeps_its_one_line_message() -> None:
    error = provider_error(settings_of(token_url="ftp://idp"))
    assert error.problems == (error,) and "\n" not in str(error)
    assert str(error).startswith(f"provider '{PROVIDER}': field 'token_url' must be")


def test_cross_field_rules_are_checked_alongside_bad_fields() -> None:
    error = provider_error(settings_of(client_secret=None, token_url="http://idp.example.com/t", scope=" x"))
    assert {p.field for p in error.problems} == {"client_secret", "token_url", "scope"}
    jwt_error = provider_error(
        settings_of(client_secret=None, token_endpoint_auth_method="private_key_jwt", audience=" ")
    )
    assert {p.field for p in jwt_error.problems} == {"private_key", "audience"}


def test_an_invalid_allow_insecure_http_is_blamed_alone() -> None:
    error = provider_error(settings_of(token_url="http://idp.example.com/t", allow_insecure_http="maybe"))
    assert [p.field for p in error.problems] == ["allow_insecure_http"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_load_config_refuses_a_fifo_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "litellm_config.json"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_config(fifo)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():
        with open(fifo, "w"):  # release the blocked reader, so the test process can end
            pass
        pytest.fail("load_config blocked on a FIFO with no writer")
    assert len(outcome) == 1 and isinstance(outcome[0], OAuth2ConfigurationError)
    assert "not a regular file" in str(outcome[0])


def test_load_config_reads_at_most_the_size_bound_of_an_endless_file() -> None:
    with pytest.raises(OAuth2ConfigurationError, match=r"not a regular file|larger than"):
        load_config("/dev/zero")


# ------------------------------------------------------------------------------------ api_style


def test_unknown_api_style_names_the_valid_ones() -> None:
    error = provider_error(settings_of(api_style="bedrock"))
    assert "'openai', 'azure' or 'anthropic'" in str(error)


@pytest.mark.parametrize("version", ["2024-10-21", "2025-04-01-preview", "v1", "preview"])
def test_azure_api_versions_accepted(version: str) -> None:
    assert provider_of(api_style="azure", api_version=version).azure_api_version == version


def test_azure_api_version_defaults_to_a_ga_version() -> None:
    assert provider_of(api_style="azure").azure_api_version == "2024-10-21"
