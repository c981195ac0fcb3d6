"""``litellm-oauth2``: check a configuration, print a token, or watch the whole thing work.

Exit codes: 0 all good, 1 a provider or the cache failed (or the demo did not behave), 2 the
configuration is unusable. Secrets and tokens are never printed, except by ``token``, whose job it is.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import unquote_plus, urlsplit

import requests

from . import __version__
from ._credentials import CredentialFile, credential_files, credential_type
from ._environment import CONFIG_ENV_VAR
from .client import TokenClient, _session_with_deadlines
from .config import MemoryCacheSettings, ProviderSettings, RedisCacheSettings, load_config
from .errors import OAuth2AuthenticationError, OAuth2ConfigurationError, OAuth2Error

__all__ = [
    "CacheCheck",
    "ProviderCheck",
    "build_parser",
    "check_cache",
    "check_provider",
    "main",
]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# The probe value ``check`` writes to Redis expires by itself should the delete never arrive.
CACHE_PROBE_TTL_MS = 30_000

_EPILOG_CHECK = """examples:
  litellm-oauth2 check
  litellm-oauth2 check --config /etc/litellm/litellm_config.json --provider azure_apim
  litellm-oauth2 check --json | jq '.providers[] | select(.ok | not)'
"""
_EPILOG_TOKEN = """examples:
  litellm-oauth2 token my_provider
  curl -H "Authorization: Bearer $(litellm-oauth2 token my_provider)" https://gateway.example.com/v1/models
"""
_EPILOG_DEMO = """The demo needs no credentials: it starts a loopback OAuth2 token server and an
OpenAI-compatible gateway, and sends real LiteLLM calls through the plugin."""


@dataclass
class ProviderCheck:
    """One row of ``check``: what happened when a token was requested and used."""

    provider: str
    token_endpoint: str
    auth_method: str
    ok: bool
    result: str
    granted_scope: str | None = None
    expires_in: int | None = None
    api_base_status: str = "-"
    credential: str = ""
    files: list[CredentialFile] = field(default_factory=list)


def check_provider(settings: ProviderSettings) -> ProviderCheck:
    """Report the credential and the files it reads (readable, valid until when; never their
    content), fetch one token for real and try it on ``{api_base}/models`` (status only)."""
    row = ProviderCheck(
        provider=settings.provider_name,
        token_endpoint=urlsplit(settings.token_url or settings.issuer or "").netloc,
        auth_method=settings.token_endpoint_auth_method,
        ok=False,
        result="",
        credential=credential_type(settings),
        files=credential_files(settings),
    )
    _fetch_and_try(settings, row)
    if row.ok and not all(file.ok for file in row.files):
        row.ok = False
        row.result = "a credential file is unusable: " + ", ".join(f.field for f in row.files if not f.ok)
    return row


def _fetch_and_try(settings: ProviderSettings, row: ProviderCheck) -> None:
    try:
        client = TokenClient(settings)
        token = client.fetch()
    except OAuth2Error as exc:
        if isinstance(exc, OAuth2AuthenticationError) and exc.error:
            row.result = exc.error + (f" ({exc.error_description})" if exc.error_description else "")
        else:
            row.result = exc.message
        return
    row.granted_scope = token.scope
    row.expires_in = int(token.expires_in())
    row.ok, row.result = True, "ok"
    if settings.api_base:
        gateway_certificate = settings.gateway_certificate
        password = gateway_certificate[2] if gateway_certificate else None
        session = _session_with_deadlines(password.get_secret_value() if password else None)
        session.trust_env = True  # as a plain requests.get: the environment's proxies and CA bundle
        try:
            response = session.get(
                settings.api_base.rstrip("/") + "/models",
                headers={
                    "Authorization": f"Bearer {token.access_token.get_secret_value()}",
                    **settings.header_values(),
                },
                timeout=settings.timeout_seconds,
                verify=settings.verify,
                cert=gateway_certificate[:2] if gateway_certificate else None,
                allow_redirects=False,
            )
            response.close()
            row.api_base_status = str(response.status_code)
            if response.status_code in (401, 403):
                row.ok, row.result = False, f"gateway refused the token (HTTP {response.status_code})"
        except requests.RequestException as exc:
            row.api_base_status = f"unreachable ({type(exc).__name__})"
            row.ok, row.result = False, "api_base unreachable"
        finally:
            session.close()
    client.close()


@dataclass
class CacheCheck:
    """The cache line of ``check``: whether tokens can be stored where the config says."""

    type: str
    location: str
    ok: bool
    result: str


def check_cache(settings: MemoryCacheSettings | RedisCacheSettings) -> CacheCheck:
    """For Redis: the extra is installed, the server answers, and a value written under the key
    prefix (with a short TTL, deleted after) reads back. The URL is shown without its password."""
    if isinstance(settings, MemoryCacheSettings):
        return CacheCheck("memory", "this process", True, "ok")
    url = settings.url.get_secret_value()
    row = CacheCheck("redis", _without_password(url), False, "")
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from .redis_store import SOCKET_TIMEOUT_SECONDS
    except ImportError as exc:
        row.result = (
            f"the redis extra is not installed ({exc.name}): pip install redis cryptography "
            "(or, in a clone of litellm-oauth2: pip install -e '.[redis]')"
        )
        return row
    key, value = f"{settings.key_prefix}check:{secrets.token_hex(8)}", secrets.token_hex(16)
    try:
        # The store's own timeouts: a server too slow for the check is too slow for the plugin.
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        try:
            client.set(key, value, px=CACHE_PROBE_TTL_MS)
            read = client.get(key)
            client.delete(key)
        finally:
            client.close()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        row.result = f"unreachable ({_redis_reason(exc, url)})"
    except (redis.RedisError, ValueError) as exc:
        row.result = f"write and read back failed ({_redis_reason(exc, url)})"
    else:
        row.ok = read == value.encode()
        row.result = "ok" if row.ok else "a value written under the key prefix did not read back"
    return row


def _without_password(url: str) -> str:
    """The URL as shown: a password in it (``user:password@`` or ``?password=``) becomes ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    query = "&".join(
        "password=***" if item.partition("=")[0] == "password" else item for item in parts.query.split("&")
    )
    return parts._replace(netloc=netloc, query=query if parts.query else "").geturl()


def _redis_reason(exc: BaseException, url: str) -> str:
    """The exception's class and text, with any password of the URL (as written and decoded) blanked."""
    parts = urlsplit(url)
    secrets_in_url = {parts.netloc.rpartition("@")[0].partition(":")[2], parts.password or ""}
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if name == "password":
            secrets_in_url.update((value, unquote_plus(value)))
    text = f"{type(exc).__name__}: {exc}"
    for secret in sorted(filter(None, secrets_in_url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _cmd_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    names = args.provider or list(config.oauth2_providers)
    providers = [config.provider(name) for name in names]
    cache = check_cache(config.cache)
    with ThreadPoolExecutor(max_workers=min(8, len(providers))) as pool:
        rows = list(pool.map(check_provider, providers))
    ok = cache.ok and all(row.ok for row in rows)
    if args.json:
        report = {"ok": ok, "providers": [asdict(r) for r in rows], "cache": asdict(cache)}
        print(json.dumps(report, indent=2))
    else:
        status = "ok" if cache.ok else f"FAILED: {cache.result}"
        print(f"{_table(rows)}\n\ncache: {cache.type} ({cache.location}): {status}")
    return EXIT_OK if ok else EXIT_FAILED


def _table(rows: list[ProviderCheck]) -> str:
    header = [
        "provider",
        "token endpoint",
        "auth method",
        "credential",
        "result",
        "granted scope",
        "expires in",
        "api_base",
    ]
    body = [
        [
            r.provider,
            r.token_endpoint,
            r.auth_method,
            r.credential,
            r.result,
            r.granted_scope or "-",
            "-" if r.expires_in is None else f"{r.expires_in} s",
            r.api_base_status,
        ]
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    files = [f"  {r.provider}: {f.field} {f.path}: {f.state}" for r in rows for f in r.files]
    if files:
        lines += ["", "credential files (content never shown):", *files]
    return "\n".join(line.rstrip() for line in lines)


def _cmd_token(args: argparse.Namespace) -> int:
    settings = load_config(args.config).provider(args.name)
    token = TokenClient(settings).fetch()
    print(token.access_token.get_secret_value())
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litellm-oauth2",
        description="OAuth2 client credentials for LiteLLM providers: check a config, print a token, run the demo.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"The configuration file is --config, else ${CONFIG_ENV_VAR}, else ./litellm_config.json.",
    )
    parser.add_argument("--version", action="version", version=f"litellm-oauth2 {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{check,token,demo}")

    check = commands.add_parser(
        "check",
        help="validate the config, fetch a token per provider, try it on the gateway, and test the cache",
        epilog=_EPILOG_CHECK,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", metavar="PATH", help="litellm_config.json (or .yaml) to read")
    check.add_argument("--provider", metavar="NAME", action="append", help="check only NAME (repeatable)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.set_defaults(run=_cmd_check)

    token = commands.add_parser(
        "token",
        help="print a fresh access token for NAME on stdout",
        epilog=_EPILOG_TOKEN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("name", metavar="NAME", help="provider name from the config")
    token.add_argument("--config", metavar="PATH", help="litellm_config.json (or .yaml) to read")
    token.set_defaults(run=_cmd_token)

    demo = commands.add_parser(
        "demo",
        help="run real LiteLLM calls through the plugin against loopback servers",
        description=_EPILOG_DEMO,
    )
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except OAuth2ConfigurationError as exc:
        print(f"litellm-oauth2: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except OAuth2Error as exc:
        print(f"litellm-oauth2: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
