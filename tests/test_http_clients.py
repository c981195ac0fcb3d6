"""The provider's HTTP clients are the ones LiteLLM builds for its own ``openai/...`` calls.

Real LiteLLM calls through the plugin to loopback servers: LiteLLM's aiohttp transport for async
calls (or httpx's when LiteLLM is told not to use it), LiteLLM's TLS settings against a gateway
behind TLS, and, whatever the transport, the bearer token on every request and no redirect
followed.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import litellm
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import SECRET, Elsewhere, Redirector, config_of, provider_dict
from litellm.llms.custom_httpx.aiohttp_transport import LiteLLMAiohttpTransport
from litellm.llms.openai.common_utils import BaseOpenAILLM

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2._styles import target
from litellm_oauth2.provider import OAuth2Provider
from litellm_oauth2.testing import OpenAIUpstream, TokenServer
from litellm_oauth2.testing._http import RecordedRequest

MESSAGES = [{"role": "user", "content": "hello"}]
REPLY = "Hello from upstream (client_id=test-client)"


def _drain(stream: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


async def _adrain(stream: Any) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


async def _astream(**kwargs: Any) -> str:
    return await _adrain(await litellm.acompletion(stream=True, **kwargs))


async def _acompletion(**kwargs: Any) -> str:
    return str((await litellm.acompletion(**kwargs)).choices[0].message.content)


def _completion(**kwargs: Any) -> str:
    return str(litellm.completion(**kwargs).choices[0].message.content)


CALLS: dict[str, Callable[[], Any]] = {
    "completion": lambda: _completion(model="gw/chat", messages=MESSAGES),
    "completion stream": lambda: _drain(litellm.completion(model="gw/chat", messages=MESSAGES, stream=True)),
    "acompletion": lambda: asyncio.run(_acompletion(model="gw/chat", messages=MESSAGES)),
    "acompletion stream": lambda: asyncio.run(_astream(model="gw/chat", messages=MESSAGES)),
    "embedding": lambda: len(litellm.embedding(model="gw/embed", input=["a", "b"]).data),
    "aembedding": lambda: len(asyncio.run(litellm.aembedding(model="gw/embed", input=["a"])).data),
}
ASYNC_CALLS = {"acompletion", "acompletion stream", "aembedding"}


def _use_transport(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    """``aiohttp``: LiteLLM's default for async calls; ``httpx``: ``litellm.disable_aiohttp_transport``."""
    monkeypatch.delenv("DISABLE_AIOHTTP_TRANSPORT", raising=False)
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", transport == "httpx")


@contextmanager
def _handler(token_server: TokenServer, api_base: str, **overrides: Any) -> Iterator[OAuth2Provider]:
    settings = provider_dict(token_server.token_url, api_base=api_base, **overrides)
    handler = OAuth2Handler(config=config_of({"gw": settings}))
    try:
        yield handler.providers["gw"]
    finally:
        handler.close()


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer() as server:
        server.add_client("test-client", SECRET)
        yield server


def _assert_bearer_on_every_request(tokens: TokenServer, requests: list[RecordedRequest]) -> None:
    assert requests
    for request in requests:
        authorization = request.headers.get("authorization", "")
        assert authorization.startswith("Bearer "), f"{request.path} reached the gateway without a token"
        claims = tokens.verify_access_token(authorization.removeprefix("Bearer "))
        assert claims is not None and claims["sub"] == "test-client"


# -- the transport -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_async_client_is_built_on_the_transport_litellm_uses_for_openai_models(
    tokens: TokenServer, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    _use_transport(monkeypatch, transport)

    async def ours_and_litellms(provider: OAuth2Provider) -> tuple[str, Any, httpx.AsyncClient]:
        text = await _acompletion(model="gw/chat", messages=MESSAGES)
        # the httpx client under the AsyncOpenAI
        ours = provider.client(target(provider.settings, "completion"), is_async=True)._client
        litellms = BaseOpenAILLM.get_async_http_client()  # what an openai/... call would get
        assert isinstance(litellms, httpx.AsyncClient)
        await litellms.aclose()
        return text, ours, litellms

    with OpenAIUpstream(tokens) as upstream, _handler(tokens, upstream.base_url) as provider:
        text, ours, litellms = asyncio.run(ours_and_litellms(provider))
        assert text == REPLY
        _assert_bearer_on_every_request(tokens, upstream.recorded)
    assert isinstance(ours, httpx.AsyncClient)
    assert type(ours._transport) is type(litellms._transport)
    assert isinstance(ours._transport, LiteLLMAiohttpTransport) == (transport == "aiohttp")
    assert ours.follow_redirects is False


@pytest.mark.parametrize(
    ("path", "transport"),
    [(path, "aiohttp") for path in CALLS] + [(path, "httpx") for path in CALLS if path in ASYNC_CALLS],
)
def test_bearer_token_on_every_request_and_on_the_401_retry(
    tokens: TokenServer, monkeypatch: pytest.MonkeyPatch, path: str, transport: str
) -> None:
    _use_transport(monkeypatch, transport)
    with OpenAIUpstream(tokens) as upstream, _handler(tokens, upstream.base_url):
        assert CALLS[path]() in (REPLY, 1, 2)
        upstream.fail_next(1, 401)  # the retry must carry the new token
        assert CALLS[path]() in (REPLY, 1, 2)
        assert upstream.requests == 3
        assert upstream.unauthorized_requests == 0
        _assert_bearer_on_every_request(tokens, upstream.recorded)
        assert len(upstream.distinct_tokens) == 2
        assert tokens.token_requests == 2


@pytest.mark.parametrize(
    ("path", "transport"),
    [
        ("completion", "aiohttp"),
        ("acompletion", "aiohttp"),
        ("acompletion stream", "aiohttp"),
        ("acompletion", "httpx"),
    ],
)
def test_gateway_calls_go_through_the_proxy_from_the_environment(
    tokens: TokenServer, monkeypatch: pytest.MonkeyPatch, path: str, transport: str
) -> None:
    _use_transport(monkeypatch, transport)
    for name in ("http_proxy", "https_proxy", "all_proxy", "ALL_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    # The proxy answers itself: a gateway reads the route from the absolute URI a proxy receives.
    with OpenAIUpstream(tokens) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # the token endpoint stays direct
        with _handler(tokens, "http://gateway.invalid:8080/v1", allow_insecure_http=True):
            assert CALLS[path]() == REPLY
        assert [request.path for request in proxy.recorded] == [
            "http://gateway.invalid:8080/v1/chat/completions"
        ]
        _assert_bearer_on_every_request(tokens, proxy.recorded)


# -- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "transport"),
    [
        ("completion", "aiohttp"),
        ("completion stream", "aiohttp"),
        ("acompletion", "aiohttp"),
        ("acompletion", "httpx"),
        ("acompletion stream", "aiohttp"),
        ("acompletion stream", "httpx"),
        ("aembedding", "aiohttp"),
    ],
)
def test_a_gateway_redirect_is_not_followed(
    tokens: TokenServer, monkeypatch: pytest.MonkeyPatch, path: str, transport: str
) -> None:
    _use_transport(monkeypatch, transport)
    with (
        Elsewhere() as elsewhere,
        Redirector(elsewhere) as redirector,
        _handler(tokens, redirector.url + "/v1"),
    ):
        with pytest.raises(Exception, match="Error code: 307"):  # LiteLLM maps it per call path
            CALLS[path]()
        assert elsewhere.seen == [], "the token followed the redirect to another host"
        assert len(redirector.seen) == 1
        _assert_bearer_on_every_request(tokens, redirector.seen)


# -- TLS -----------------------------------------------------------------------------------------


class _TLSUpstream(OpenAIUpstream):
    """The loopback gateway behind TLS.

    The serving thread keeps watching the listening socket's descriptor; a second descriptor of
    the same socket, wrapped in TLS, is what accepts (and handshakes) each connection.
    """

    def __init__(self, token_server: TokenServer, context: ssl.SSLContext) -> None:
        super().__init__(token_server)
        self._context = context
        self._plain: socket.socket | None = None

    def start(self) -> _TLSUpstream:
        super().start()
        httpd = self._httpd
        assert httpd is not None
        if self._plain is None:
            self._plain = httpd.socket
            listener = socket.socket(fileno=os.dup(self._plain.fileno()))
            httpd.socket = self._context.wrap_socket(listener, server_side=True)
        return self

    def close(self) -> None:
        super().close()
        if self._plain is not None:
            self._plain.close()
            self._plain = None

    @property
    def base_url(self) -> str:
        return "https://" + self.url.removeprefix("http://") + "/v1"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ssl.SSLContext]:
    """A private CA (its PEM path) and a server context with a certificate it issued for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    usage = dict.fromkeys(
        ["content_commitment", "key_encipherment", "data_encipherment", "key_agreement"], False
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("litellm-oauth2 test CA"))
        .issuer_name(_name("litellm-oauth2 test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
                **usage,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return str(ca_path), context


def _refused_certificate(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a TLS handshake that refused the gateway's certificate."""
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None:
            continue
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        pending += [current.__cause__, current.__context__]
    return False


TLS_PATHS = [
    ("completion", "aiohttp"),
    ("acompletion", "aiohttp"),
    ("acompletion stream", "aiohttp"),
    ("acompletion", "httpx"),
]
CA = "<the test CA>"


@pytest.mark.parametrize(("path", "transport"), TLS_PATHS)
@pytest.mark.parametrize(
    ("litellm_ssl_verify", "provider_verify", "accepted"),
    [
        pytest.param(True, None, False, id="litellm-default-refuses-private-CA"),
        pytest.param(False, None, True, id="litellm-ssl_verify-false"),
        pytest.param(CA, None, True, id="litellm-ssl_verify-CA-bundle"),
        pytest.param(False, True, False, id="provider-verify-true-wins"),
        pytest.param(True, CA, True, id="provider-verify-CA-bundle-wins"),
    ],
)
def test_tls_verification_follows_litellm_unless_the_provider_sets_verify(
    tokens: TokenServer,
    tls: tuple[str, ssl.SSLContext],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    transport: str,
    litellm_ssl_verify: bool | str,
    provider_verify: bool | str | None,
    accepted: bool,
) -> None:
    ca_path, context = tls
    monkeypatch.delenv("SSL_VERIFY", raising=False)
    monkeypatch.setattr(litellm, "ssl_verify", ca_path if litellm_ssl_verify == CA else litellm_ssl_verify)
    _use_transport(monkeypatch, transport)
    verify = ca_path if provider_verify == CA else provider_verify
    with _TLSUpstream(tokens, context) as upstream, _handler(tokens, upstream.base_url, verify=verify):
        if accepted:
            assert CALLS[path]() == REPLY
            _assert_bearer_on_every_request(tokens, upstream.recorded)
        else:
            with pytest.raises(Exception) as info:  # LiteLLM maps it per call path
                CALLS[path]()
            assert _refused_certificate(info.value), f"not a certificate refusal: {info.value!r}"
            assert upstream.requests == 0


# -- the caller's own sessions -------------------------------------------------------------------


def test_litellm_client_sessions_are_neither_used_nor_changed(
    tokens: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    through_sessions: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        through_sessions.append(request)

    sync_session = httpx.Client(event_hooks={"request": [through_sessions.append]})
    async_session = httpx.AsyncClient(event_hooks={"request": [record]})
    monkeypatch.setattr(litellm, "client_session", sync_session)
    monkeypatch.setattr(litellm, "aclient_session", async_session)
    with OpenAIUpstream(tokens) as upstream, _handler(tokens, upstream.base_url):
        assert CALLS["completion"]() == REPLY
        assert CALLS["acompletion"]() == REPLY
        _assert_bearer_on_every_request(tokens, upstream.recorded)
        assert through_sessions == []
        assert sync_session.event_hooks["request"] == [through_sessions.append]
        assert async_session.event_hooks["request"] == [record]
        # The caller's own request through its session carries no token of ours.
        upstream.reset()
        assert sync_session.post(upstream.base_url + "/chat/completions", json={}).status_code == 401
        assert "authorization" not in upstream.recorded[0].headers
    sync_session.close()
    asyncio.run(async_session.aclose())


@pytest.fixture(autouse=True)
def _quiet_litellm() -> None:
    litellm.suppress_debug_info = True
