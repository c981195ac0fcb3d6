"""A private certificate authority made on the spot, for loopback servers speaking real TLS.

Mutual TLS (RFC 8705) is tested over real handshakes: the token server and the gateways serve
HTTPS with a certificate this CA issued for 127.0.0.1, and ask for client certificates that it
issued too (``tls_client_auth``) or that are self-signed (``self_signed_tls_client_auth``).
Needs ``cryptography`` (the ``jwt`` extra).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CertificateFiles", "PrivateCA", "thumbprint"]


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: the base64url SHA-256 of the DER certificate, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate and its key as PEM files, and the certificate's DER and ``x5t#S256``."""

    certificate_path: Path
    key_path: Path
    der: bytes

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.der)

    @property
    def pem(self) -> bytes:
        return self.certificate_path.read_bytes()


class PrivateCA:
    """A CA whose certificate is ``ca_path``; issues server and client certificates into ``directory``."""

    def __init__(self, directory: Path, name: str = "litellm-oauth2 test CA") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509 import BasicConstraints

        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(name, name, self._key.public_key(), days=1)
        builder = builder.add_extension(BasicConstraints(ca=True, path_length=0), critical=True)
        self._certificate = _sign(builder, self._key)
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(_pem(self._certificate))
        self._server = self.issue("127.0.0.1", server=True)

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        days: float = 1,
        password: bytes | None = None,
        stem: str | None = None,
    ) -> CertificateFiles:
        """A certificate for ``common_name`` signed by this CA (for 127.0.0.1 when ``server``),
        written as ``<stem>.pem`` and ``<stem>.key`` (the key encrypted with ``password`` if given)."""
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID

        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(common_name, self._certificate.subject, key.public_key(), days=days)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if server:
            address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
        return self._write(_sign(builder, self._key), key, stem or common_name, password)

    def self_signed(self, common_name: str, *, stem: str | None = None) -> CertificateFiles:
        """A self-signed client certificate (``self_signed_tls_client_auth``), not from this CA."""
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _sign(_builder(common_name, common_name, key.public_key(), days=1), key)
        return self._write(certificate, key, stem or f"{common_name}-self-signed", None)

    def server_context(self, *, require_client_certificate: bool = False) -> ssl.SSLContext:
        """A server context with this CA's certificate for 127.0.0.1, asking for client
        certificates issued by this CA (or trusted later with ``load_verify_locations``)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._server.certificate_path, self._server.key_path)
        context.load_verify_locations(self.ca_path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
        # A self-signed client certificate registered with the server is its own trust anchor.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return context

    def _write(self, certificate: Any, key: Any, stem: str, password: bytes | None) -> CertificateFiles:
        from cryptography.hazmat.primitives import serialization

        encryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        certificate_path, key_path = self.directory / f"{stem}.pem", self.directory / f"{stem}.key"
        certificate_path.write_bytes(_pem(certificate))
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
        return CertificateFiles(certificate_path, key_path, certificate.public_bytes(_der()))


def _builder(subject: str, issuer: Any, public_key: Any, *, days: float) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def name(value: Any) -> Any:
        if isinstance(value, x509.Name):
            return value
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])

    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _sign(builder: Any, key: Any) -> Any:
    from cryptography.hazmat.primitives import hashes

    return builder.sign(key, hashes.SHA256())


def _pem(certificate: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _der() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER
