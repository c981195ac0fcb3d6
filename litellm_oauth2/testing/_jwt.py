"""HS256 JSON Web Tokens (RFC 7519, compact JWS) from the standard library alone.

A plain install has neither PyJWT nor cryptography, yet the demo and users' test suites need a
token server whose tokens a gateway checks. HMAC-SHA256 over a key the two servers share needs
only ``hmac``; RS256/ES256 stay with PyJWT (the ``jwt`` extra).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

__all__ = ["InvalidToken", "decode_hs256", "encode_hs256", "unverified_claims", "unverified_header"]


class InvalidToken(ValueError):
    """A token that is malformed, wrongly signed or expired; the message says which."""


def _encode_part(value: dict[str, Any]) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_part(part: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed token") from exc
    if not isinstance(value, dict):
        raise InvalidToken("malformed token")
    return value


def _parts(token: str) -> list[str]:
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():
        raise InvalidToken("malformed token")
    return parts


def _signature(signing_input: str, key: bytes) -> str:
    digest = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def encode_hs256(claims: dict[str, Any], key: bytes, headers: dict[str, str] | None = None) -> str:
    """``claims`` signed with HMAC-SHA256 under ``key``, as a compact JWS."""
    signing_input = (
        _encode_part({"alg": "HS256", "typ": "JWT", **(headers or {})}) + "." + _encode_part(claims)
    )
    return signing_input + "." + _signature(signing_input, key)


def unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header, unchecked. Raises ``InvalidToken`` when ``token`` is not a compact JWS."""
    return _decode_part(_parts(token)[0])


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims, unchecked (who a token says it is). Raises ``InvalidToken`` when malformed."""
    return _decode_part(_parts(token)[1])


def decode_hs256(token: str, key: bytes) -> dict[str, Any]:
    """The claims of an HS256 token signed with ``key`` whose numeric ``exp`` is still ahead.

    Raises ``InvalidToken`` otherwise; the header's ``alg`` must be HS256, nothing else is accepted.
    """
    header_part, claims_part, signature = _parts(token)
    if _decode_part(header_part).get("alg") != "HS256":
        raise InvalidToken("the token is not signed with HS256")
    if not hmac.compare_digest(signature, _signature(f"{header_part}.{claims_part}", key)):
        raise InvalidToken("signature verification failed")
    claims = _decode_part(claims_part)
    expiry = claims.get("exp")
    if isinstance(expiry, bool) or not isinstance(expiry, (int, float)):
        raise InvalidToken("the token has no numeric exp claim")
    if expiry <= time.time():
        raise InvalidToken("the token has expired")
    return claims
