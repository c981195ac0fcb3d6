"""Configuration: the ``litellm_config.json`` file, its pydantic models, and loading.

Every problem found while loading becomes an ``OAuth2ConfigurationError`` (or its
``OAuth2ValidationError`` subclass) whose message names the provider and the field and
never contains a configured value, since the value may be a secret.

Loading reports every problem at once (every provider, every field, the cache section and
unknown keys), one per provider and field, in ``error.problems``; the error raised is an
``OAuth2ValidationError`` only when every problem is a value that is not allowed.

The core never imports LiteLLM: refusing the provider names LiteLLM routes itself happens
when the handler registers the providers (``_compat.check_provider_names``).
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import ipaddress
import json
import os
import re
import ssl
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._environment import CONFIG_ENV_VAR, DEFAULT_CONFIG_PATH
from .errors import OAuth2ConfigurationError, OAuth2Error, OAuth2ValidationError

__all__ = [
    "DEFAULT_AZURE_API_VERSION",
    "MAX_CONFIG_BYTES",
    "ApiStyle",
    "MemoryCacheSettings",
    "MetricsSettings",
    "OAuth2Config",
    "ProviderSettings",
    "RedisCacheSettings",
    "RetrySettings",
    "check_certificate_pair",
    "config_path",
    "load_config",
    "read_credential_file",
    "read_document",
]

ENV_REFERENCE_PREFIX = "os.environ/"
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_JSON_DEPTH = 32

# Token request parameters the plugin sets itself; extra_token_params may not repeat them.
RESERVED_TOKEN_PARAMS = frozenset(
    {
        "grant_type",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "scope",
        "audience",
        "resource",
        "refresh_token",
    }
)
# RFC 7230 token characters, for header names.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+\Z")
_PROVIDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*\Z")
_API_VERSION = re.compile(r"^(v1|preview|latest|\d{4}-\d{2}-\d{2}(-preview)?)\Z")


AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "client_assertion",
    "tls_client_auth",
    "self_signed_tls_client_auth",
]
# RFC 8705 §2: the client authenticates with its TLS client certificate.
MTLS_METHODS = frozenset({"tls_client_auth", "self_signed_tls_client_auth"})
# Largest credential file read (a client secret, a federated assertion): a mounted secret is small.
MAX_CREDENTIAL_FILE_BYTES = 64 * 1024
ApiStyle = Literal["openai", "azure", "anthropic"]
# Azure OpenAI's current GA data-plane version; "v1" selects the /openai/v1 path style instead.
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def _is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts plain HTTP is allowed to by default."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_http_url(value: str, *, allow_insecure_http: bool) -> str:
    """Absolute http(s) URL with a host and no fragment; plain http only towards loopback."""
    if value != value.strip() or not value:
        raise ValueError("must be an absolute http(s) URL without surrounding spaces")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an absolute URL starting with https:// (or http:// for a loopback host)")
    if not parts.hostname:
        raise ValueError("must be an absolute URL with a host name")
    if parts.fragment or "#" in value:
        raise ValueError("must not contain a fragment ('#...')")
    if parts.username or parts.password:
        raise ValueError("must not embed credentials; use client_id/client_secret")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback_host(parts.hostname):
        raise ValueError(
            "uses plain http:// towards a non-loopback host, which would send credentials in clear text; "
            "use https:// or set allow_insecure_http: true"
        )
    return value


class RetrySettings(BaseModel):
    """Retries of the token request for failures that can heal (5xx, 429, timeouts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    attempts: Annotated[int, Field(ge=0, le=10)] = 3
    initial_delay: Annotated[float, Field(ge=0, le=300)] = 1.0
    max_delay: Annotated[float, Field(ge=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _delays_ordered(self) -> RetrySettings:
        if self.initial_delay > self.max_delay:
            raise ValueError("initial_delay must not be larger than max_delay")
        return self


class MemoryCacheSettings(BaseModel):
    """Tokens live in this process only (the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["memory"] = "memory"


class RedisCacheSettings(BaseModel):
    """Tokens are shared by every process that points at the same Redis."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["redis"]
    url: SecretStr
    key_prefix: str = "litellm_oauth2:"
    encryption: bool = True
    # Required with encryption when a provider holds no stable secret (client_assertion): the
    # token-sealing key is derived from it instead of from a provider's credential.
    encryption_key: SecretStr | None = None

    @field_validator("encryption_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. the output of: openssl rand -base64 32)")
        return value

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


CacheSettings = Annotated[MemoryCacheSettings | RedisCacheSettings, Field(discriminator="type")]


class MetricsSettings(BaseModel):
    """Where the token cache's counters go; each exporter's package is imported only when switched on.

    ``prometheus`` registers a collector on ``prometheus_client``'s default registry (the
    ``prometheus`` extra), ``opentelemetry`` observable instruments on the global
    ``MeterProvider`` (the ``otel`` extra), ``litellm_service_logging`` reports each token
    request through LiteLLM's service hooks (those in ``litellm.service_callback``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    prometheus: bool = False
    opentelemetry: bool = False
    litellm_service_logging: bool = True


class ProviderSettings(BaseModel):
    """One OAuth2-protected LLM provider: how to get its token and where its API lives."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    # Field order matters: a field validator sees only the fields declared above it
    # (allow_insecure_http for the URLs; the credentials for token_endpoint_auth_method).
    provider_name: str
    allow_insecure_http: bool = False
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_path: str | None = None
    client_secret: Annotated[SecretStr | None, Field(validate_default=True)] = None
    client_assertion_path: str | None = None
    token_url: str | None = None
    issuer: str | None = None
    scope: str | None = None
    refresh_token: SecretStr | None = None
    audience: str | None = None
    resource: tuple[str, ...] = ()
    extra_token_params: dict[str, str] = Field(default_factory=dict)
    private_key: SecretStr | None = None
    private_key_path: str | None = None
    client_certificate_path: str | None = None
    client_key_path: str | None = None
    client_key_password: SecretStr | None = None
    gateway_client_certificate_path: str | None = None
    gateway_client_key_path: str | None = None
    gateway_client_key_password: SecretStr | None = None
    token_endpoint_auth_method: Annotated[AuthMethod, Field(validate_default=True)] = "client_secret_basic"
    basic_auth_encoding: Literal["rfc6749", "raw"] = "rfc6749"
    signing_algorithm: Literal["RS256", "ES256"] = "RS256"
    key_id: str | None = None
    api_base: str | None = None
    api_style: ApiStyle = "openai"
    api_version: str | None = None
    responses_api_version: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    expiry_buffer_seconds: Annotated[float, Field(ge=0, lt=86400)] = 60.0
    default_expires_in: Annotated[float, Field(gt=0, le=31_536_000)] = 3600.0
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10.0
    verify: bool | str = True
    retry: RetrySettings = Field(default_factory=RetrySettings)

    @field_validator("provider_name")
    @classmethod
    def _provider_name(cls, value: str) -> str:
        if not _PROVIDER_NAME.match(value):
            raise ValueError(
                "must be a LiteLLM provider prefix: letters, digits, '_', '-' or '.', no '/' or spaces"
            )
        return value

    @field_validator("resource", mode="before")
    @classmethod
    def _resource_list(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("resource")
    @classmethod
    def _resource_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            parts = urlsplit(uri)
            if not parts.scheme or uri != uri.strip() or " " in uri:
                raise ValueError(
                    "each resource must be an absolute URI (RFC 8707), e.g. https://api.example.com"
                )
            if "#" in uri:
                raise ValueError("a resource URI must not contain a fragment ('#...') (RFC 8707)")
        if len(set(value)) != len(value):
            raise ValueError("lists the same resource twice")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tokens = value.split(" ")
        if any(not token for token in tokens):
            raise ValueError(
                "has an empty scope value (leading, trailing or double spaces); separate scopes by one space"
            )
        if not all(_SCOPE_TOKEN.match(token) for token in tokens):
            raise ValueError(
                'contains a character not allowed in a scope (RFC 6749 §3.3: no quotes, "\\" or controls)'
            )
        return value

    @field_validator("client_secret")
    @classmethod
    def _secret_from_file(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """``client_secret_path``: the mounted secret file is read here, at load (the token client
        reads it again when the endpoint answers invalid_client, as after a rotation)."""
        path = info.data.get("client_secret_path")
        if path is None:
            return value
        if value is not None:
            raise _FieldError("client_secret_path", "must not be set together with client_secret")
        try:
            return SecretStr(read_credential_file(path))
        except OSError as exc:
            raise _FieldError("client_secret_path", str(exc)) from None

    @field_validator(
        "audience",
        "key_id",
        "private_key_path",
        "client_secret_path",
        "client_assertion_path",
        "client_certificate_path",
        "client_key_path",
        "gateway_client_certificate_path",
        "gateway_client_key_path",
    )
    @classmethod
    def _non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty; remove the field instead")
        return value

    @field_validator("extra_token_params")
    @classmethod
    def _extra_params(cls, value: dict[str, str]) -> dict[str, str]:
        for name, param in value.items():
            if not name or not param:
                raise ValueError("names and values must not be empty")
            if name in RESERVED_TOKEN_PARAMS:
                raise ValueError(f"must not set '{name}': the plugin sends it from its own field")
        return value

    @field_validator("api_version", "responses_api_version")
    @classmethod
    def _api_version(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("api_style", "azure") != "azure":
            raise ValueError("applies to api_style 'azure' only; remove it or set api_style: azure")
        if not _API_VERSION.match(value):
            raise ValueError(
                "must be an Azure OpenAI api-version such as 2024-10-21, 2025-04-01-preview or v1"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Values are secrets: gateways take subscription keys (Ocp-Apim-Subscription-Key) as headers.
        for name, header in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError("has a header name that is not a valid HTTP token")
            if any(ch in header.get_secret_value() for ch in "\r\n\x00"):
                raise ValueError(f"header '{name}' has a line break or NUL in its value")
            if name.lower() in ("authorization", "api-key", "x-api-key"):
                raise ValueError(f"must not set '{name}': the plugin sends the bearer token itself")
        return value

    @field_validator("verify", mode="before")
    @classmethod
    def _verify_flag(cls, value: object) -> object:
        # "true"/"false" arrive as strings through os.environ/ references.
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value

    @field_validator("verify")
    @classmethod
    def _verify(cls, value: bool | str) -> bool | str:
        # os.path.isfile, unlike Path.is_file, returns False (not OSError) for over-long names.
        if isinstance(value, str) and not os.path.isfile(value):
            raise ValueError("names a CA bundle file that does not exist; use true, false or a PEM file path")
        return value

    @field_validator("token_url", "issuer", "api_base")
    @classmethod
    def _http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        # Absent when allow_insecure_http was invalid itself: that field alone is blamed.
        return _check_http_url(value, allow_insecure_http=info.data.get("allow_insecure_http", True))

    @field_validator("token_endpoint_auth_method")
    @classmethod
    def _credentials_for(cls, method: AuthMethod, info: ValidationInfo) -> AuthMethod:
        # A credential field missing from info.data was invalid itself and is blamed already.
        data = info.data
        if "token_url" in data and "issuer" in data:
            if data["token_url"] is None and data["issuer"] is None:
                raise _FieldError("token_url", "is required (or issuer, to discover it)", missing=True)
            if data["token_url"] is not None and data["issuer"] is not None:
                raise _FieldError("token_url", "must not be set together with issuer (which discovers it)")
        if data.get("client_assertion_path") is not None and method != "client_assertion":
            raise _FieldError(
                "client_assertion_path", 'applies to token_endpoint_auth_method "client_assertion" only'
            )
        _check_certificate_fields(data, "client_", method in MTLS_METHODS)
        _check_certificate_fields(data, "gateway_client_", False)
        # Under mTLS the certificate is the credential, checked above.
        if method == "client_assertion":
            if "client_assertion_path" in data and data["client_assertion_path"] is None:
                raise _FieldError(
                    "client_assertion_path",
                    "is required for client_assertion: the file the platform writes the federated token to",
                    missing=True,
                )
        elif method == "private_key_jwt":
            keys = [data[field] for field in ("private_key", "private_key_path") if field in data]
            if len(keys) == 2 and (keys[0] is None) == (keys[1] is None):
                raise _FieldError(
                    "private_key", "private_key_jwt needs exactly one of private_key or private_key_path"
                )
        elif "client_secret" in data and method not in MTLS_METHODS:
            secret = data["client_secret"]
            if secret is None or not secret.get_secret_value():
                raise _FieldError(
                    "client_secret",
                    f"is required for {method} (or client_secret_path, or set token_endpoint_auth_method: "
                    "private_key_jwt or client_assertion)",
                )
        return method

    @property
    def cache_key(self) -> str:
        """Everything that changes the token request or how its token is used, hashed.

        Providers sharing a key share one token and one token client, so any setting of the request
        (client authentication, TLS, timeout, retries) or of the token's use (buffer, default
        lifetime) joins it; only provider_name, api_base, headers and allow_insecure_http (the LLM
        request and validation) stay out. Holds no secret and no URL in clear: it names Redis keys.
        """
        identity = [
            self.token_url,
            self.issuer,
            self.client_id,
            self.scope,
            self.audience,
            list(self.resource),
            sorted(self.extra_token_params.items()),
            # Each refresh token is its own grant, and different credentials for one client_id
            # must not share a token: only digests, never the values.
            _digest(self.refresh_token),
            _digest(self.client_secret),
            self.client_secret_path,
            _digest(self.private_key) or self.private_key_path,
            self.client_assertion_path,
            self.client_certificate_path,
            self.client_key_path,
            _digest(self.client_key_password),
            self.token_endpoint_auth_method,
            self.basic_auth_encoding,
            self.signing_algorithm,
            self.key_id,
            self.verify,
            self.timeout_seconds,
            self.retry.model_dump(),
            self.expiry_buffer_seconds,
            self.default_expires_in,
        ]
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()

    @property
    def uses_mtls(self) -> bool:
        """Whether the client authenticates to the token endpoint with its certificate (RFC 8705 §2)."""
        return self.token_endpoint_auth_method in MTLS_METHODS

    @property
    def gateway_certificate(self) -> tuple[str, str, SecretStr | None] | None:
        """Certificate file, key file and key password presented to the gateway: its own, else the
        token endpoint's when the method is mTLS (certificate-bound tokens need the same one), else none."""
        if self.gateway_client_certificate_path is not None:
            key = self.gateway_client_key_path or self.gateway_client_certificate_path
            return self.gateway_client_certificate_path, key, self.gateway_client_key_password
        if self.uses_mtls and self.client_certificate_path is not None:
            key = self.client_key_path or self.client_certificate_path
            return self.client_certificate_path, key, self.client_key_password
        return None

    @property
    def azure_api_version(self) -> str:
        """The api-version of an ``azure`` provider's calls (``v1``: the /openai/v1 path style)."""
        return self.api_version or DEFAULT_AZURE_API_VERSION

    def header_values(self) -> dict[str, str]:
        """The extra request headers in clear, for the outgoing LLM request only."""
        return {name: value.get_secret_value() for name, value in self.headers.items()}

    def sealing_material(self) -> bytes:
        """The secret this provider's tokens are sealed under in Redis: the client secret, the
        private key (private_key_jwt), or the client certificate's key file and its password (mTLS).

        Raises:
            OAuth2ConfigurationError: a key file cannot be read; for client_assertion, always (it
                holds no stable secret: the cache's ``encryption_key`` is required instead).
        """
        if self.token_endpoint_auth_method == "private_key_jwt":
            return self.read_private_key()
        if self.uses_mtls:
            path = self.client_key_path or self.client_certificate_path
            try:
                material = Path(path or "").read_bytes()
            except OSError as exc:
                raise OAuth2ConfigurationError(
                    f"provider '{self.provider_name}': field 'client_key_path' names a file that cannot "
                    f"be read ({exc.strerror})",
                    provider=self.provider_name,
                    field="client_key_path",
                ) from None
            password = self.client_key_password.get_secret_value() if self.client_key_password else ""
            return material + b"\0" + password.encode()
        if self.token_endpoint_auth_method == "client_assertion":
            raise OAuth2ConfigurationError(
                f"provider '{self.provider_name}': client_assertion holds no stable secret to seal "
                "tokens in Redis with; set the cache's encryption_key",
                provider=self.provider_name,
                field="cache.encryption_key",
            )
        return (self.client_secret or SecretStr("")).get_secret_value().encode()

    def read_private_key(self) -> bytes:
        """The PEM of the private_key_jwt signing key, from the field or the file."""
        if self.private_key is not None:
            return self.private_key.get_secret_value().encode()
        if self.private_key_path is None:
            raise OAuth2ConfigurationError(
                f"provider '{self.provider_name}': field 'private_key' is required for private_key_jwt",
                provider=self.provider_name,
            )
        try:
            return Path(self.private_key_path).read_bytes()
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise OAuth2ConfigurationError(
                f"provider '{self.provider_name}': field 'private_key_path' names a file that cannot be read "
                f"({getattr(exc, 'strerror', None) or type(exc).__name__}); "
                "check the path and its permissions",
                original_error=exc,
                provider=self.provider_name,
            ) from None


def read_credential_file(path: str) -> str:
    """A credential file's text, surrounding whitespace removed (mounted secrets often end in a newline).

    Raises:
        OSError: the file cannot be read, is larger than ``MAX_CREDENTIAL_FILE_BYTES``, is not
            UTF-8 or is empty; the message gives the reason, never the path (a configured value)
            or the content.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_CREDENTIAL_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise OSError(f"names a file that cannot be read ({reason})") from None
    if len(raw) > MAX_CREDENTIAL_FILE_BYTES:
        raise OSError(f"names a file larger than {MAX_CREDENTIAL_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise OSError("names a file that is not UTF-8 text") from None
    if not text:
        raise OSError("names an empty file")
    return text


def _check_certificate_fields(data: Mapping[str, Any], prefix: str, required: bool) -> None:
    """The ``{prefix}certificate_path``/``key_path``/``key_password`` trio: present when ``required``,
    readable, and a key that matches the certificate. Raises ``_FieldError`` naming the field and file."""
    cert_field, key_field, password_field = (
        f"{prefix}{name}" for name in ("certificate_path", "key_path", "key_password")
    )
    if any(field not in data for field in (cert_field, key_field, password_field)):
        return  # one of them was invalid itself and is blamed already
    certificate, key, password = data[cert_field], data[key_field], data[password_field]
    if certificate is None:
        if required:
            raise _FieldError(
                cert_field, "is required for tls_client_auth and self_signed_tls_client_auth", missing=True
            )
        if key is not None or password is not None:
            raise _FieldError(
                cert_field, f"is required when {key_field} or {password_field} is set", missing=True
            )
        return
    try:
        check_certificate_pair(certificate, key, password)
    except _CertificateProblem as exc:
        field = {"certificate": cert_field, "key": key_field, "password": password_field}[exc.part]
        raise _FieldError(field, str(exc)) from None


class _CertificateProblem(ValueError):
    """Why a certificate and key cannot be used; ``part`` says which field is to blame."""

    def __init__(self, part: Literal["certificate", "key", "password"], message: str) -> None:
        super().__init__(message)
        self.part = part


def check_certificate_pair(certificate: str, key: str | None, password: SecretStr | None) -> None:
    """Load the certificate and key as a TLS client would, so a bad pair fails at load, not mid-call.

    Raises:
        ValueError: a file cannot be read, holds no PEM certificate or key, the key does not
            match the certificate, or the password does not decrypt it; the message never holds a
            path (a configured value) or a file's content.
    """
    texts: dict[str, str] = {}
    parts: tuple[tuple[Literal["certificate", "key"], str], ...] = (
        ("certificate", certificate),
        ("key", key or certificate),
    )
    for part, path in parts:
        try:
            with open(path, "rb") as handle:
                texts[part] = handle.read(MAX_CONFIG_BYTES).decode("ascii", "replace")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise _CertificateProblem(part, f"names a file that cannot be read ({reason})") from None
    if "-----BEGIN CERTIFICATE-----" not in texts["certificate"]:
        raise _CertificateProblem("certificate", "names a file with no PEM certificate")
    if "PRIVATE KEY-----" not in texts["key"]:
        raise _CertificateProblem("key", "names a file with no PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # b"" rather than None: OpenSSL would ask for a missing password on the terminal.
        context.load_cert_chain(certificate, key, (password.get_secret_value() if password else "").encode())
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise _CertificateProblem(
                "key",
                "names a key that does not match the certificate",
            ) from None
        if "ENCRYPTED" in texts["key"]:
            raise _CertificateProblem(
                "password",
                "does not decrypt the key" if password else "is required: the key is encrypted",
            ) from None
        raise _CertificateProblem(
            "key",
            f"cannot be loaded with the certificate ({exc.reason or 'PEM'})",
        ) from None
    except OSError as exc:
        raise _CertificateProblem("certificate", f"cannot be loaded ({exc.strerror})") from None


def _digest(secret: SecretStr | None) -> str | None:
    return None if secret is None else hashlib.sha256(secret.get_secret_value().encode()).hexdigest()


class OAuth2Config(BaseModel):
    """The whole file: providers by name, and where tokens are cached."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    oauth2_providers: dict[str, ProviderSettings]
    cache: CacheSettings = Field(default_factory=MemoryCacheSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    def provider(self, name: str) -> ProviderSettings:
        """The provider called ``name``, or an error listing the configured ones."""
        try:
            return self.oauth2_providers[name]
        except KeyError:
            raise _unknown_provider(name, self.oauth2_providers) from None

    @classmethod
    def from_dict(cls, data: object, *, source: str = "configuration") -> OAuth2Config:
        """Validate a parsed document.

        Raises:
            OAuth2ConfigurationError: listing every problem found (see ``_combined_error``).
        """
        if not isinstance(data, Mapping):
            raise OAuth2ConfigurationError(
                f"{source}: the top level must be a JSON object with an 'oauth2_providers' object"
            )
        problems = _Problems()
        _reject_unknown(data, set(cls.model_fields), f"{source}:", problems)
        providers: dict[str, ProviderSettings] = {}
        raw_providers = data.get("oauth2_providers")
        if "oauth2_providers" not in data:
            problems.add(
                OAuth2ConfigurationError(
                    f"{source}: missing 'oauth2_providers': "
                    "add an object mapping provider names to their settings",
                    field="oauth2_providers",
                )
            )
        elif not isinstance(raw_providers, Mapping) or not raw_providers:
            problems.add(
                OAuth2ConfigurationError(
                    f"{source}: 'oauth2_providers' must be a non-empty object mapping provider names to settings",
                    field="oauth2_providers",
                )
            )
        else:
            seen: set[str] = set()
            for key, settings in raw_providers.items():
                name = str(key)  # YAML keys 1 and "1" are distinct until they become provider names
                if name in seen:
                    problems.add(
                        OAuth2ConfigurationError(
                            f"{source}: duplicate key '{name}': each provider and field may appear only once",
                            provider=name,
                        )
                    )
                    continue
                seen.add(name)
                provider = _validate_provider(name, settings, problems)
                if provider is not None:
                    providers[name] = provider
        cache = _validate_cache(data.get("cache", {"type": "memory"}), source, problems)
        metrics = _validate_metrics(data.get("metrics", {}), source, problems)
        if isinstance(cache, RedisCacheSettings) and cache.encryption and cache.encryption_key is None:
            for name, provider in providers.items():
                if provider.token_endpoint_auth_method == "client_assertion":
                    problems.add(
                        OAuth2ConfigurationError(
                            f"{source}: cache: field 'encryption_key' is required: provider '{name}' uses "
                            "client_assertion, which holds no stable secret to derive the Redis "
                            'encryption key from (or set "encryption": false)',
                            provider=name,
                            field="cache.encryption_key",
                        )
                    )
        if problems.found:
            raise _combined_error(problems.found, source)
        assert cache is not None and metrics is not None  # no problem found, so both validated
        return cls.model_construct(oauth2_providers=providers, cache=cache, metrics=metrics)


def _unknown_provider(name: str, known: Iterable[str]) -> OAuth2ConfigurationError:
    """The error for a provider name that is not configured, listing the ones that are."""
    listed = ", ".join(sorted(known)) or "none"
    return OAuth2ConfigurationError(
        f"unknown OAuth2 provider '{name}'; configured providers: {listed}", provider=name
    )


class _FieldError(ValueError):
    """A check that blames another field than the one it runs on, so the message can name it;
    ``missing``: the field is required here and absent (a configuration error, not a bad value)."""

    def __init__(self, field: str, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.field = field
        self.missing = missing


def _combined_error(problems: Sequence[OAuth2ConfigurationError], source: str) -> OAuth2ConfigurationError:
    """One error for every problem found, each listed on its own line.

    The rule for its class: ``OAuth2ValidationError`` when every problem is a value that is not
    allowed, else ``OAuth2ConfigurationError`` (a missing or unknown field, an unset variable, a
    file that cannot be used). A single problem is returned as it is, its message one line.
    """
    if len(problems) == 1:
        return problems[0]
    invalid = all(isinstance(problem, OAuth2ValidationError) for problem in problems)
    cls = OAuth2ValidationError if invalid else OAuth2ConfigurationError
    providers = {problem.provider for problem in problems}
    listed = "\n".join(f"  {problem.message.removeprefix(f'{source}: ')}" for problem in problems)
    return cls(
        f"{source}: {len(problems)} problems:\n{listed}",
        provider=providers.pop() if len(providers) == 1 else None,
        problems=problems,
    )


class _Problems:
    """Every problem of one document, in the order found; one per provider and field."""

    def __init__(self) -> None:
        self.found: list[OAuth2ConfigurationError] = []
        self._blamed: set[tuple[str | None, str]] = set()

    def add(self, error: OAuth2ConfigurationError) -> None:
        if error.field is not None:
            if (error.provider, error.field) in self._blamed:
                return  # a consequence of the problem already reported for that field
            self._blamed.add((error.provider, error.field))
        self.found.append(error)


def _reject_unknown(
    data: Mapping[Any, Any],
    allowed: set[str],
    where: str,
    problems: _Problems,
    *,
    provider: str | None = None,
    field_prefix: str = "",
) -> None:
    for key in data:
        if key not in allowed:
            problems.add(
                OAuth2ConfigurationError(
                    f"{where} unknown field '{key}'{_suggestion(str(key), allowed)}",
                    provider=provider,
                    field=f"{field_prefix}{key}",
                )
            )


def _suggestion(key: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid fields: {', '.join(sorted(allowed))}"


def _resolve_env_references(
    value: object, on_missing: Callable[[str, str], OAuth2Error], path: str = ""
) -> object:
    """Replace every ``os.environ/NAME`` string (at any depth) with the variable's value."""
    if isinstance(value, str):
        if not value.startswith(ENV_REFERENCE_PREFIX):
            return value
        var = value[len(ENV_REFERENCE_PREFIX) :]
        resolved = os.environ.get(var) if var else None
        if resolved is None:
            raise on_missing(path, var)
        return resolved
    if isinstance(value, Mapping):
        return {
            k: _resolve_env_references(v, on_missing, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env_references(v, on_missing, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _validate_provider(name: str, settings: object, problems: _Problems) -> ProviderSettings | None:
    prefix = f"provider '{name}'"
    if not isinstance(settings, Mapping):
        problems.add(OAuth2ConfigurationError(f"{prefix}: settings must be a JSON object", provider=name))
        return None
    if "provider_name" in settings:
        problems.add(
            OAuth2ConfigurationError(
                f"{prefix}: field 'provider_name' is taken from the object key; remove it",
                provider=name,
                field="provider_name",
            )
        )
    allowed = set(ProviderSettings.model_fields) - {"provider_name"}
    others = {key: value for key, value in settings.items() if key != "provider_name"}
    _reject_unknown(others, allowed, f"{prefix}:", problems, provider=name)
    known = {key: value for key, value in others.items() if key in allowed}

    def missing(field: str, var: str) -> OAuth2Error:
        return OAuth2ConfigurationError(
            f"{prefix}: field '{field}' refers to environment variable '{var}', which is not set",
            provider=name,
            field=field.partition(".")[0],
        )

    resolved = _resolve_each(known, missing, problems)
    try:
        return ProviderSettings.model_validate({**resolved, "provider_name": name})
    except ValidationError as exc:
        for problem in _translate(exc, prefix, name):
            problems.add(problem)
        return None


def _validate_cache(
    raw: object, source: str, problems: _Problems
) -> MemoryCacheSettings | RedisCacheSettings | None:
    prefix = f"{source}: cache"
    if not isinstance(raw, Mapping):
        problems.add(
            OAuth2ConfigurationError(f'{prefix}: must be an object like {{"type": "memory"}}', field="cache")
        )
        return None
    kind = raw.get("type", "memory")
    model: type[MemoryCacheSettings] | type[RedisCacheSettings]
    if kind == "memory":
        model = MemoryCacheSettings
    elif kind == "redis":
        model = RedisCacheSettings
    else:
        problems.add(
            OAuth2ValidationError(f"{prefix}: field 'type' must be 'memory' or 'redis'", field="cache.type")
        )
        return None
    allowed = set(model.model_fields)
    _reject_unknown(raw, allowed, f"{prefix}:", problems, field_prefix="cache.")

    def missing(field: str, var: str) -> OAuth2Error:
        return OAuth2ConfigurationError(
            f"{prefix}: field '{field}' refers to environment variable '{var}', which is not set",
            field=f"cache.{field.partition('.')[0]}",
        )

    resolved = _resolve_each({k: v for k, v in raw.items() if k in allowed}, missing, problems)
    try:
        return model.model_validate(resolved)
    except ValidationError as exc:
        for problem in _translate(exc, prefix, None, field_prefix="cache."):
            problems.add(problem)
        return None


def _validate_metrics(raw: object, source: str, problems: _Problems) -> MetricsSettings | None:
    prefix = f"{source}: metrics"
    if not isinstance(raw, Mapping):
        problems.add(
            OAuth2ConfigurationError(
                f'{prefix}: must be an object like {{"prometheus": true}}', field="metrics"
            )
        )
        return None
    allowed = set(MetricsSettings.model_fields)
    _reject_unknown(raw, allowed, f"{prefix}:", problems, field_prefix="metrics.")
    try:
        return MetricsSettings.model_validate({k: v for k, v in raw.items() if k in allowed})
    except ValidationError as exc:
        for problem in _translate(exc, prefix, None, field_prefix="metrics."):
            problems.add(problem)
        return None


def _resolve_each(
    fields: Mapping[Any, Any], missing: Callable[[str, str], OAuth2Error], problems: _Problems
) -> dict[Any, Any]:
    """Resolve env references field by field: a field with an unset variable is reported and left out."""
    resolved: dict[Any, Any] = {}
    for key, value in fields.items():
        try:
            resolved[key] = _resolve_env_references(value, missing, str(key))
        except OAuth2ConfigurationError as exc:
            problems.add(exc)
    return resolved


def _translate(
    exc: ValidationError, prefix: str, provider: str | None, *, field_prefix: str = ""
) -> list[OAuth2ConfigurationError]:
    """Turn each of pydantic's errors into one sentence naming the field, never echoing the input."""
    translated: list[OAuth2ConfigurationError] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int)) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        ctx_error = (error.get("ctx") or {}).get("error")
        missing = error["type"] == "missing"
        if isinstance(ctx_error, _FieldError):
            field, message, missing = ctx_error.field, str(ctx_error), ctx_error.missing
        blamed = f"{field_prefix}{field}"
        if missing and isinstance(ctx_error, _FieldError):
            translated.append(
                OAuth2ConfigurationError(
                    f"{prefix}: field '{field}' {message}", provider=provider, field=blamed
                )
            )
        elif missing:
            translated.append(
                OAuth2ConfigurationError(
                    f"{prefix}: field '{field}' is required", provider=provider, field=blamed
                )
            )
        else:
            translated.append(
                OAuth2ValidationError(
                    f"{prefix}: field '{field}' {_as_predicate(message)}", provider=provider, field=blamed
                )
            )
    return translated


def _as_predicate(message: str) -> str:
    """Pydantic says 'Input should be ...'; ours say 'must be ...'. Both read after the field name."""
    if message.startswith("Input "):
        return message[len("Input ") :]
    return message


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise OAuth2ConfigurationError(
                f"duplicate key '{key}': each provider and field may appear only once"
            )
        result[key] = value
    return result


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The file to read: the argument, else ``$LITELLM_OAUTH2_CONFIG``, else ``./litellm_config.json``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> OAuth2Config:
    """Read, parse and validate the configuration file (JSON, or YAML for .yaml/.yml).

    Raises:
        OAuth2ConfigurationError: the file cannot be read or parsed, or it has problems, all of
            them in ``problems`` (an ``OAuth2ValidationError`` when each is a value not allowed).
    """
    file = config_path(path)
    return OAuth2Config.from_dict(read_document(file), source=str(file))


def read_document(file: Path) -> object:
    """The configuration file parsed, not yet validated: read once, at most ``MAX_CONFIG_BYTES``.

    Only a regular file is read, opened non-blocking: a FIFO without a writer cannot hold the
    caller and ``/dev/zero`` cannot fill its memory (a regular file ignores the flag).

    Raises:
        OAuth2ConfigurationError: the file is missing, not a regular file, unreadable, too
            large, not UTF-8, or not valid JSON/YAML.
    """
    try:
        descriptor = os.open(file, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise OAuth2ConfigurationError(
            f"configuration file '{file}' not found; create it or set {CONFIG_ENV_VAR} to its path"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _unreadable(file, exc) from None
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise _unreadable(file, IsADirectoryError(errno.EISDIR, "Is a directory"))
        if not stat.S_ISREG(mode):
            raise OAuth2ConfigurationError(f"configuration file '{file}' is not a regular file")
        with open(descriptor, "rb", closefd=False) as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise _unreadable(file, exc) from None
    finally:
        os.close(descriptor)
    if len(raw) > MAX_CONFIG_BYTES:
        raise OAuth2ConfigurationError(f"configuration file '{file}' is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OAuth2ConfigurationError(
            f"configuration file '{file}' is not UTF-8 text (bad byte at offset {exc.start})"
        ) from None
    return _parse_document(text, source=str(file), yaml=file.suffix.lower() in (".yaml", ".yml"))


def _unreadable(file: Path, exc: BaseException) -> OAuth2ConfigurationError:
    return OAuth2ConfigurationError(
        f"configuration file '{file}' cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})",
        original_error=exc,
    )


def _parse_document(text: str, *, source: str, yaml: bool = False) -> object:
    """Parse JSON (or YAML) text, rejecting duplicate keys and absurd nesting."""
    if yaml:
        data = _parse_yaml(text, source)
    else:
        try:
            data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise OAuth2ConfigurationError(
                f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise OAuth2ConfigurationError(f"{source}: JSON nested too deeply") from None
        except OAuth2ConfigurationError as exc:
            raise OAuth2ConfigurationError(f"{source}: {exc.message}") from None
        except ValueError:  # e.g. an integer literal longer than sys.get_int_max_str_digits()
            raise OAuth2ConfigurationError(f"{source}: invalid JSON: a number is too long") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise OAuth2ConfigurationError(f"{source}: nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _parse_yaml(text: str, source: str) -> object:
    import yaml

    class _Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # Aliases would let a tiny file expand exponentially ("billion laughs").
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported", mark)
            return super().compose_node(parent, index)

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        pairs = [(loader.construct_object(k), loader.construct_object(v)) for k, v in node.value]
        return _reject_duplicate_keys(pairs)

    _Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OAuth2ConfigurationError(f"{source}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError:
        raise OAuth2ConfigurationError(f"{source}: invalid YAML") from None
    except RecursionError:
        raise OAuth2ConfigurationError(f"{source}: YAML nested too deeply") from None
    except OAuth2ConfigurationError as exc:
        raise OAuth2ConfigurationError(f"{source}: {exc.message}") from None
    except (ValueError, TypeError):  # bad !!timestamp/!!int/!!float scalars, unhashable (list) keys
        raise OAuth2ConfigurationError(f"{source}: invalid YAML: a key or value cannot be built") from None


def _depth(value: object, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level
