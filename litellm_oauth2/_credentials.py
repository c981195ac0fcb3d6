"""What a provider proves its identity with, and the state of each file it reads, for ``check``.

Only names, paths, readability and dates are reported: never a file's content, so the output of
``litellm-oauth2 check`` can be pasted into a ticket. Certificate dates need ``cryptography``
(the ``jwt`` extra); without it the expiry is reported as unknown.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from .client import jwt_lifetime
from .config import ProviderSettings, read_credential_file

__all__ = ["CredentialFile", "credential_files", "credential_type"]

_TYPES = {
    "client_secret_basic": "client secret (basic)",
    "client_secret_post": "client secret (post)",
    "private_key_jwt": "private key JWT",
    "client_assertion": "federated assertion",
    "tls_client_auth": "mTLS certificate",
    "self_signed_tls_client_auth": "self-signed mTLS certificate",
}


@dataclass(frozen=True)
class CredentialFile:
    """One file a provider reads: which field names it, where it is, and whether it is usable."""

    field: str
    path: str
    ok: bool
    state: str


def credential_type(settings: ProviderSettings) -> str:
    """How the client authenticates, in words (``client secret (basic, from a file)``)."""
    kind = _TYPES[settings.token_endpoint_auth_method]
    if settings.client_secret_path is not None and "secret" in kind:
        kind = kind.replace(")", ", from a file)")
    if settings.refresh_token is not None:
        kind += " + refresh token"
    return kind


def credential_files(settings: ProviderSettings) -> list[CredentialFile]:
    """Each credential file the provider reads (secret, key, assertion, certificates, CA bundle), checked now."""
    files: list[CredentialFile] = []
    for field, kind in (
        ("client_secret_path", "secret"),
        ("private_key_path", "file"),
        ("client_assertion_path", "assertion"),
        ("client_certificate_path", "certificate"),
        ("client_key_path", "file"),
        ("gateway_client_certificate_path", "certificate"),
        ("gateway_client_key_path", "file"),
        ("verify", "file"),
    ):
        path = getattr(settings, field)
        if isinstance(path, str):
            files.append(_checked(field, path, kind))
    return files


def _checked(field: str, path: str, kind: str) -> CredentialFile:
    try:
        if kind in ("secret", "assertion"):
            text = read_credential_file(path)
        else:
            with open(path, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        reason = str(exc).removeprefix("names ") if kind in ("secret", "assertion") else exc.strerror
        return CredentialFile(field, path, False, f"unusable: {reason}")
    if kind == "assertion":
        left = jwt_lifetime(text, time.time())
        if left is None:
            return CredentialFile(field, path, True, "readable (no JWT expiry)")
        when = _date(time.time() + left)
        if left <= 0:
            return CredentialFile(field, path, False, f"EXPIRED at {when}")
        return CredentialFile(field, path, True, f"valid until {when}")
    if kind == "certificate":
        return _certificate_state(field, path, data)
    return CredentialFile(field, path, True, "readable")


def _certificate_state(field: str, path: str, data: bytes) -> CredentialFile:
    try:
        from cryptography import x509
    except ImportError:
        return CredentialFile(field, path, True, "readable (expiry unknown: install cryptography)")
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        return CredentialFile(field, path, False, "unusable: no PEM certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if not_after <= now:
        return CredentialFile(field, path, False, f"EXPIRED at {_date(not_after.timestamp())}")
    if not_before > now:
        return CredentialFile(field, path, False, f"not valid before {_date(not_before.timestamp())}")
    return CredentialFile(field, path, True, f"valid until {_date(not_after.timestamp())}")


def _date(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")
