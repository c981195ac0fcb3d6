"""The Redis encryption key of providers without a shared secret, against a real redis-server.

A federated assertion changes every hour and is no secret of the process: such providers need
the cache's ``encryption_key``. An mTLS provider seals under its certificate's private key.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("redis", reason="the redis extra is not installed")
if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed (apt-get install redis-server)", allow_module_level=True)

import redis
from helpers import config_of, provider_dict
from redis_server import RedisServer, make_store

from litellm_oauth2 import OAuth2ConfigurationError, TokenCache
from litellm_oauth2.config import OAuth2Config
from litellm_oauth2.testing import TokenServer
from litellm_oauth2.testing._tls import PrivateCA

SUBJECT = "system:serviceaccount:llm:chat-app"
ENCRYPTION_KEY = "an-explicit-KNOWN-encryption-key-0123456789"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[redis.Redis]:
    if not redis_server.running:
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


def assertion_config(server: TokenServer, path: Path, url: str, **cache: Any) -> OAuth2Config:
    provider = provider_dict(
        server.token_url,
        client_id="workload",
        client_secret=None,
        token_endpoint_auth_method="client_assertion",
        client_assertion_path=str(path),
    )
    return config_of({"idp": provider}, cache={"type": "redis", "url": url, **cache})


def test_client_assertion_with_encrypted_redis_needs_an_encryption_key(tmp_path: Path) -> None:
    with TokenServer() as server:
        with pytest.raises(OAuth2ConfigurationError) as info:
            assertion_config(server, tmp_path / "token", "redis://127.0.0.1:1/0")
        assert info.value.field == "cache.encryption_key" and info.value.provider == "idp"
        assertion_config(server, tmp_path / "token", "redis://127.0.0.1:1/0", encryption=False)
        assertion_config(server, tmp_path / "token", "redis://127.0.0.1:1/0", encryption_key=ENCRYPTION_KEY)
        with pytest.raises(OAuth2ConfigurationError) as info:
            assertion_config(server, tmp_path / "token", "redis://127.0.0.1:1/0", encryption_key="short")
        assert info.value.field == "cache.encryption_key" and "short" not in str(info.value)


def test_processes_holding_the_encryption_key_share_a_sealed_token(
    redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path
) -> None:
    with TokenServer() as server:
        server.add_client("workload", federated_subject=SUBJECT)
        path = tmp_path / "token"
        path.write_text(server.federated_assertion(SUBJECT))
        config = assertion_config(server, path, redis_server.url, encryption_key=ENCRYPTION_KEY)
        first, second = (TokenCache(config, store=make_store(config)) for _ in range(2))
        token = first.get_token("idp")
        assert second.get_token("idp") == token
        assert server.token_requests == 1
        stored = b"".join(redis_db.get(key) or b"" for key in redis_db.keys("*token:*"))
        assert stored and token.encode() not in stored
        other = assertion_config(server, path, redis_server.url, encryption_key=ENCRYPTION_KEY[::-1])
        assert TokenCache(other, store=make_store(other)).get_token("idp") != token  # cannot open it
        assert server.token_requests == 2
        for cache in (first, second):
            cache.close()


def test_an_mtls_provider_seals_under_its_private_key(
    redis_server: RedisServer, redis_db: redis.Redis, tmp_path: Path
) -> None:
    ca = PrivateCA(tmp_path / "pki")
    certificate = ca.issue("mtls-client")
    with TokenServer(key_type="HS256", tls=ca.server_context()) as server:
        server.add_client("mtls-client", certificate_subject="mtls-client")
        provider = provider_dict(
            server.token_url,
            client_id="mtls-client",
            client_secret=None,
            token_endpoint_auth_method="tls_client_auth",
            client_certificate_path=str(certificate.certificate_path),
            client_key_path=str(certificate.key_path),
            verify=str(ca.ca_path),
        )
        config = config_of({"idp": provider}, cache={"type": "redis", "url": redis_server.url})
        first, second = (TokenCache(config, store=make_store(config)) for _ in range(2))
        token = first.get_token("idp")
        assert second.get_token("idp") == token and server.token_requests == 1
        stored = b"".join(redis_db.get(key) or b"" for key in redis_db.keys("*token:*"))
        assert stored and token.encode() not in stored
        # Renewed in place with a new key: the old value does not open; the new process fetches.
        ca.issue("mtls-client", stem="mtls-client")
        renewed = TokenCache(config, store=make_store(config))
        assert renewed.get_token("idp") != token and server.token_requests == 2
        for cache in (first, second, renewed):
            cache.close()
