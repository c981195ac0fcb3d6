"""Small builders shared by the tests: provider settings pointed at the loopback servers."""

from __future__ import annotations

import importlib.metadata
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from litellm_oauth2.config import OAuth2Config, ProviderSettings
from litellm_oauth2.testing._http import LoopbackServer, RecordedRequest, Response, json_response

SECRET = "s3cr3t-KNOWN:/+%&= value"
# The installed LiteLLM, (major, minor, patch): a few facts the tests check differ per version.
LITELLM_VERSION = tuple(int(part) for part in re.findall(r"\d+", importlib.metadata.version("litellm"))[:3])
# Where LiteLLM sends the Responses API of an Azure deployment with a dated api-version, as (route,
# api-version; None: the call's own), decided by llms/azure/responses/transformation.py
# (get_complete_url): /openai/v1/responses?api-version=preview from 1.109, /openai/responses on 1.108.
AZURE_DATED_RESPONSES: tuple[str, str | None] = (
    ("/openai/v1/responses", "preview") if LITELLM_VERSION >= (1, 109) else ("/openai/responses", None)
)
# A gateway's 401 with OpenAI's error body ("type": "invalid_request_error") on an endpoint LiteLLM
# serves with its own HTTP handler (openai responses, hosted_vllm rerank) is an AuthenticationError
# from 1.109, a BadRequestError (status 400) on 1.108: litellm_core_utils/exception_mapping_utils.py.
INVALID_REQUEST_401_IS_AUTHENTICATION_ERROR = LITELLM_VERSION >= (1, 109)
FAST_RETRY = {"attempts": 3, "initial_delay": 0.01, "max_delay": 0.05}


def provider_dict(token_url: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "client_id": "test-client",
        "client_secret": SECRET,
        "token_url": token_url,
        "retry": dict(FAST_RETRY),
        "timeout_seconds": 5,
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v is not None}


def config_of(providers: dict[str, dict[str, Any]], **top: Any) -> OAuth2Config:
    return OAuth2Config.from_dict({"oauth2_providers": providers, **top})


def provider(token_url: str, name: str = "idp_test", **overrides: Any) -> ProviderSettings:
    return config_of({name: provider_dict(token_url, **overrides)}).provider(name)


def rsa_key_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _pem_pair(key)


def ec_key_pair() -> tuple[str, str]:
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


def _pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class Elsewhere(LoopbackServer):
    """Another host: records whatever reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[RecordedRequest] = []

    def respond(self, request: RecordedRequest) -> Response:
        self.seen.append(request)
        return json_response(200, {"object": "list", "data": []})


class Redirector(LoopbackServer):
    """A gateway that answers every request with a 307 to ``Elsewhere`` (an open redirect, a bad rewrite)."""

    def __init__(self, target: Elsewhere) -> None:
        super().__init__()
        self.target = target
        self.seen: list[RecordedRequest] = []

    def respond(self, request: RecordedRequest) -> Response:
        self.seen.append(request)
        return Response(307, b"", {"Location": self.target.url + request.path})
