"""Mutual TLS towards the gateway, on every call path, with certificate-bound tokens (RFC 8705 §3).

The token server and the gateway serve real TLS with certificates of a private CA made by the
test; the gateway requires a client certificate in the handshake and accepts a token only when
its ``cnf.x5t#S256`` is the certificate presented. Real LiteLLM calls: sync, async on both
transports, streaming, embeddings, the Router.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import litellm
import pytest
from helpers import SECRET, config_of, provider_dict

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2.testing import OpenAIUpstream, TokenServer
from litellm_oauth2.testing._tls import CertificateFiles, PrivateCA

CLIENT = "mtls-client"
MESSAGES = [{"role": "user", "content": "hello"}]


def _reply(response: Any) -> str:
    return str(response.choices[0].message.content)


async def _astream() -> str:
    stream = await litellm.acompletion(model="gw/chat", messages=MESSAGES, stream=True)
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


def _router_call() -> str:
    router = litellm.Router(model_list=[{"model_name": "chat", "litellm_params": {"model": "gw/chat"}}])
    return _reply(router.completion(model="chat", messages=MESSAGES))


def _arouter_call() -> str:
    router = litellm.Router(model_list=[{"model_name": "chat", "litellm_params": {"model": "gw/chat"}}])
    return _reply(asyncio.run(router.acompletion(model="chat", messages=MESSAGES)))


CALLS: dict[str, Callable[[], Any]] = {
    "completion": lambda: _reply(litellm.completion(model="gw/chat", messages=MESSAGES)),
    "completion stream": lambda: "".join(
        chunk.choices[0].delta.content or ""
        for chunk in litellm.completion(model="gw/chat", messages=MESSAGES, stream=True)
    ),
    "acompletion": lambda: _reply(asyncio.run(litellm.acompletion(model="gw/chat", messages=MESSAGES))),
    "acompletion stream": lambda: asyncio.run(_astream()),
    "embedding": lambda: len(litellm.embedding(model="gw/embed", input=["a", "b"]).data),
    "aembedding": lambda: len(asyncio.run(litellm.aembedding(model="gw/embed", input=["a"])).data),
    "router": _router_call,
    "arouter": _arouter_call,
}
ASYNC_CALLS = {"acompletion", "acompletion stream", "aembedding", "arouter"}


@pytest.fixture(autouse=True)
def _quiet_litellm() -> None:
    litellm.suppress_debug_info = True


@pytest.fixture
def ca(tmp_path: Path) -> PrivateCA:
    return PrivateCA(tmp_path / "pki")


@pytest.fixture
def certificate(ca: PrivateCA) -> CertificateFiles:
    return ca.issue(CLIENT)


@pytest.fixture
def tokens(ca: PrivateCA) -> Iterator[TokenServer]:
    with TokenServer(key_type="HS256", tls=ca.server_context()) as server:
        server.add_client(CLIENT, certificate_subject=CLIENT)
        server.add_client("test-client", SECRET)
        yield server


@pytest.fixture
def gateway(tokens: TokenServer, ca: PrivateCA) -> Iterator[OpenAIUpstream]:
    upstream = OpenAIUpstream(tokens)
    upstream.tls = ca.server_context(require_client_certificate=True)
    upstream.certificate_bound = True
    with upstream:
        yield upstream


def _mtls_provider(
    tokens: TokenServer,
    gateway: OpenAIUpstream,
    ca: PrivateCA,
    certificate: CertificateFiles,
    **overrides: Any,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "client_id": CLIENT,
        "client_secret": None,
        "token_endpoint_auth_method": "tls_client_auth",
        "client_certificate_path": str(certificate.certificate_path),
        "client_key_path": str(certificate.key_path),
        "verify": str(ca.ca_path),
        "api_base": gateway.base_url,
    }
    return provider_dict(tokens.token_url, **{**fields, **overrides})


def _use_transport(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    monkeypatch.delenv("DISABLE_AIOHTTP_TRANSPORT", raising=False)
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", transport == "httpx")


PATHS = [(path, "aiohttp") for path in CALLS] + [(path, "httpx") for path in sorted(ASYNC_CALLS)]


@pytest.mark.parametrize(("path", "transport"), PATHS)
def test_every_call_path_presents_the_certificate_its_token_is_bound_to(
    tokens: TokenServer,
    gateway: OpenAIUpstream,
    ca: PrivateCA,
    certificate: CertificateFiles,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    transport: str,
) -> None:
    _use_transport(monkeypatch, transport)
    handler = OAuth2Handler(config=config_of({"gw": _mtls_provider(tokens, gateway, ca, certificate)}))
    try:
        result = CALLS[path]()
    finally:
        handler.close()
    assert result in (1, 2) or "Hello from upstream" in result
    assert gateway.requests >= 1 and gateway.unauthorized_requests == 0
    assert all(request.client_certificate == certificate.der for request in gateway.recorded)
    assert tokens.token_requests == 1


def test_a_token_bound_to_another_certificate_is_refused(
    tokens: TokenServer, gateway: OpenAIUpstream, ca: PrivateCA, certificate: CertificateFiles
) -> None:
    other = ca.issue("another-workload")
    settings = _mtls_provider(
        tokens,
        gateway,
        ca,
        certificate,
        gateway_client_certificate_path=str(other.certificate_path),
        gateway_client_key_path=str(other.key_path),
    )
    handler = OAuth2Handler(config=config_of({"gw": settings}))
    try:
        with pytest.raises(litellm.AuthenticationError):
            CALLS["completion"]()
    finally:
        handler.close()
    assert gateway.authorized_requests == 0 and gateway.unauthorized_requests >= 1
    assert {request.client_certificate for request in gateway.recorded} == {other.der}


def test_a_gateway_certificate_with_a_client_secret_towards_the_token_endpoint(
    tokens: TokenServer, ca: PrivateCA, certificate: CertificateFiles
) -> None:
    upstream = OpenAIUpstream(tokens)
    upstream.tls = ca.server_context(require_client_certificate=True)
    settings = provider_dict(
        tokens.token_url,
        verify=str(ca.ca_path),
        api_base="",
        gateway_client_certificate_path=str(certificate.certificate_path),
        gateway_client_key_path=str(certificate.key_path),
    )
    with upstream:
        settings["api_base"] = upstream.base_url
        handler = OAuth2Handler(config=config_of({"gw": settings}))
        try:
            assert "Hello from upstream" in CALLS["acompletion"]()
            assert "Hello from upstream" in CALLS["completion"]()
        finally:
            handler.close()
        assert [request.client_certificate for request in upstream.recorded] == [certificate.der] * 2
    assert tokens.requests[0].client_certificate is None  # the token endpoint got the secret only


def test_without_a_client_certificate_the_gateway_refuses_the_handshake(
    tokens: TokenServer, gateway: OpenAIUpstream, ca: PrivateCA
) -> None:
    settings = provider_dict(tokens.token_url, verify=str(ca.ca_path), api_base=gateway.base_url)
    handler = OAuth2Handler(config=config_of({"gw": settings}))
    try:
        with pytest.raises(Exception, match="Connection error"):  # LiteLLM's class varies by path
            CALLS["completion"]()
    finally:
        handler.close()
    assert gateway.requests == 0


def test_check_shows_the_credential_and_its_files_never_their_content(
    tokens: TokenServer,
    gateway: OpenAIUpstream,
    ca: PrivateCA,
    certificate: CertificateFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from litellm_oauth2.cli import main

    tokens.add_client("workload", federated_subject="system:serviceaccount:llm:app")
    assertion = tmp_path / "assertion"
    assertion.write_text(tokens.federated_assertion("system:serviceaccount:llm:app", lifetime=-60))
    providers = {
        "gw": _mtls_provider(tokens, gateway, ca, certificate),
        "federated": provider_dict(
            tokens.token_url,
            client_id="workload",
            client_secret=None,
            token_endpoint_auth_method="client_assertion",
            client_assertion_path=str(assertion),
            verify=str(ca.ca_path),
        ),
    }
    config = tmp_path / "litellm_config.json"
    config.write_text(json.dumps({"oauth2_providers": providers}))
    assert main(["check", "--config", str(config)]) == 1  # the expired assertion
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:4]}
    assert "mTLS certificate" in rows["gw"] and " ok " in rows["gw"] and "200" in rows["gw"]
    assert "federated assertion" in rows["federated"] and " ok " not in rows["federated"]
    expiry = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    assert f"gw: client_certificate_path {certificate.certificate_path}: valid until {expiry:%Y-%m-%d}" in out
    assert f"gw: client_key_path {certificate.key_path}: readable" in out
    assert f"federated: client_assertion_path {assertion}: EXPIRED at " in out
    assert "BEGIN" not in out and assertion.read_text() not in out
    assert gateway.recorded[-1].client_certificate == certificate.der
    assert main(["check", "--json", "--config", str(config), "--provider", "gw"]) == 0
    report = json.loads(capsys.readouterr().out)
    (row,) = report["providers"]
    assert row["credential"] == "mTLS certificate"
    assert [f["field"] for f in row["files"]] == ["client_certificate_path", "client_key_path", "verify"]


def test_the_proxy_presents_the_certificate_on_chat_streaming_and_embeddings(
    tokens: TokenServer, gateway: OpenAIUpstream, ca: PrivateCA, certificate: CertificateFiles, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import requests
    import yaml
    from test_proxy import MASTER_KEY, Proxy, free_port, stop, wait_until_live

    oauth2 = {"oauth2_providers": {"gw": _mtls_provider(tokens, gateway, ca, certificate)}}
    (tmp_path / "litellm_config.json").write_text(json.dumps(oauth2))
    proxy_config = {
        "model_list": [
            {"model_name": "chat", "litellm_params": {"model": "gw/chat-model"}},
            {"model_name": "embed", "litellm_params": {"model": "gw/embedding-model"}},
        ],
        "litellm_settings": {"callbacks": ["litellm_oauth2.proxy_handler"]},
        "general_settings": {"master_key": MASTER_KEY},
    }
    (tmp_path / "proxy.yaml").write_text(yaml.safe_dump(proxy_config))
    env = {key: value for key, value in os.environ.items() if not key.startswith("LITELLM_OAUTH2_")}
    env.update(
        LITELLM_OAUTH2_CONFIG=str(tmp_path / "litellm_config.json"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    command = [sys.executable, "-m", "litellm.proxy.proxy_cli", "--config", str(tmp_path / "proxy.yaml")]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    stdout_path, stderr_path = tmp_path / "proxy.stdout", tmp_path / "proxy.stderr"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    proxy = Proxy(f"http://127.0.0.1:{port}", process, stdout_path, stderr_path, tokens, gateway)
    try:
        wait_until_live(proxy)
        chat = {"model": "chat", "messages": MESSAGES}
        assert proxy.post("/v1/chat/completions", chat).status_code == 200, proxy.stderr_tail()
        streamed = proxy.post("/v1/chat/completions", {**chat, "stream": True})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
        embedded = proxy.post("/v1/embeddings", {"model": "embed", "input": ["a"]})
        assert embedded.status_code == 200, embedded.text
    except requests.RequestException:
        pytest.fail(f"the proxy did not answer; stderr tail:\n{proxy.stderr_tail()}")
    finally:
        stop(process)
    assert gateway.requests == 3 and gateway.unauthorized_requests == 0
    assert all(request.client_certificate == certificate.der for request in gateway.recorded)


@pytest.mark.parametrize("path", ["completion", "acompletion"])
def test_a_certificate_renewed_in_place_is_presented_to_the_gateway_and_its_bound_token_follows(
    tokens: TokenServer,
    gateway: OpenAIUpstream,
    ca: PrivateCA,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
) -> None:
    _use_transport(monkeypatch, "aiohttp")
    first = ca.issue(CLIENT, stem="renewed")
    handler = OAuth2Handler(config=config_of({"gw": _mtls_provider(tokens, gateway, ca, first)}))
    try:
        assert "Hello from upstream" in CALLS["completion"]()
        second = ca.issue(CLIENT, stem="renewed")  # cert-manager renewed it in place
        assert "Hello from upstream" in CALLS[path]()
    finally:
        handler.close()
    assert gateway.recorded[0].client_certificate == first.der
    assert gateway.recorded[-1].client_certificate == second.der
    # The cached token was bound to the old certificate: refused once, then fetched with the new one.
    assert tokens.token_requests == 2
    assert [request.client_certificate for request in tokens.requests] == [first.der, second.der]
