"""Leak audit: every code path, with known credentials, and none of them may appear anywhere.

One test drives the plugin through success (four client authentication and grant types, every
SDK and Router call shape), retries (503, 429, timeouts, resets, background refresh), every
error (each refusal, each malformed response, redirects, unreachable endpoints, gateway 401/403,
configuration errors) and the CLI, with a known client secret, refresh token, private key,
gateway header value and the tokens the server issues. Meanwhile it captures:

* every log record at DEBUG, the plugin's and LiteLLM's (its debug switched on and its own
  secret redaction switched off, so the plugin cannot hide behind it), and third parties';
* everything written to stdout and stderr (file descriptors), CLI output included;
* every callback's arguments (a ``CustomLogger`` on every hook, plain function callbacks);
* every exception: ``str``, ``repr``, the formatted traceback with its chain, its attributes;
* with Redis available, every raw key and value the shared token cache wrote.

and asserts that no credential (nor its URL- or Base64-encoded form, nor a JWT's signature)
appears in any of it. The CLI's ``token`` command prints a token by design: its stdout is only
checked for the other credentials. Failures name the credential and where it leaked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import litellm
import pytest
from helpers import Elsewhere, Redirector, rsa_key_pair
from litellm.integrations.custom_logger import CustomLogger
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from test_proxy import CLIENT_ID as PROXY_CLIENT_ID
from test_proxy import CLIENT_SECRET as PROXY_SECRET
from test_proxy import Proxy, proxy  # noqa: F401 - the proxy fixture, a subprocess started per module

from litellm_oauth2 import OAuth2Handler
from litellm_oauth2._service_logging import attach_service_logging
from litellm_oauth2.cache import REFETCH_AFTER_401_SECONDS
from litellm_oauth2.cli import main as cli_main
from litellm_oauth2.config import load_config
from litellm_oauth2.exporters import export_to_opentelemetry, export_to_prometheus
from litellm_oauth2.testing import OpenAIUpstream, TokenServer
from litellm_oauth2.testing.token_server import MALFORM_KINDS

CLIENT_SECRET = "Lk7-KNOWN-client-secret:/+%&= x"
OTHER_SECRET = "Qz2-KNOWN-other-secret"
REFRESH_TOKEN = "rt-KNOWN-refresh-token-4Tq"
BAD_REFRESH_TOKEN = "rt-KNOWN-revoked-refresh-9Wm"
HEADER_VALUE = "KNOWN-apim-subscription-key-8Rv"
MESSAGES = [{"role": "user", "content": "leak audit"}]
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
DEBUG_LOGGERS = ("", *LITELLM_LOGGERS, "litellm_oauth2", "httpx", "httpcore", "openai", "urllib3")
# Modules whose every log record must carry ``provider`` and ``event`` for JSON log handlers.
STRUCTURED_MODULES = {
    "cache",
    "client",
    "redis_store",
    "config",
    "cli",
    "metrics",
    "exporters",
    "_service_logging",
    "_bearer",
    "provider",
    "handler",
    "_doors",
    "autoload",
}
PLAIN_RECORD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# -- capture -------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """Everything captured, each piece labelled with where it came from."""

    pieces: list[tuple[str, str]] = field(default_factory=list)
    token_exempt: list[tuple[str, str]] = field(default_factory=list)  # `litellm-oauth2 token` stdout

    def add(self, where: str, text: object) -> None:
        self.pieces.append((where, text if isinstance(text, str) else repr(text)))

    def exception(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: str(exception)", str(exc))
        self.add(f"{where}: repr(exception)", repr(exc))
        self.add(f"{where}: traceback", "".join(traceback.format_exception(exc)))
        self.add(f"{where}: exception attributes", {k: repr(v) for k, v in vars(exc).items()})


class Capture(logging.Handler):
    def __init__(self, evidence: Evidence) -> None:
        super().__init__(logging.DEBUG)
        self.evidence = evidence
        self.records = 0
        self.litellm_records = 0
        self.structured_records = 0
        self.unstructured: list[str] = []  # plugin records without provider and event

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        self.litellm_records += record.name.startswith("LiteLLM")
        extra = {key: value for key, value in vars(record).items() if key not in PLAIN_RECORD}
        if extra:
            self.evidence.add(f"log record {record.name}:{record.levelname} extra fields", extra)
        if record.name == "litellm_oauth2" and record.module in STRUCTURED_MODULES:
            self.structured_records += 1
            if not {"provider", "event"} <= extra.keys():
                self.unstructured.append(f"{record.module}:{record.lineno}")
        try:
            text = self.format(record)
        except Exception as exc:  # a record that cannot format is still evidence
            text = f"{record.msg!r} {record.args!r} ({exc!r})"
        self.evidence.add(f"log record {record.name}:{record.levelname}", text)


class Recorder(CustomLogger):
    """A callback on every hook, as a logging or observability vendor would see the calls."""

    def __init__(self, evidence: Evidence) -> None:
        super().__init__()
        self.evidence = evidence
        self.calls = 0

    def _seen(self, hook: str, *values: Any) -> None:
        self.calls += 1
        for value in values:
            self.evidence.add(f"callback {hook}", value)

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self._seen("log_pre_api_call", model, messages, kwargs)

    def log_post_api_call(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._seen("log_post_api_call", kwargs, response_obj)

    def log_stream_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._seen("log_stream_event", kwargs, response_obj)

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._seen("log_success_event", kwargs, response_obj)

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._seen("log_failure_event", kwargs, response_obj)

    async def async_log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
        self._seen("async_log_pre_api_call", model, messages, kwargs)

    async def async_log_stream_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._seen("async_log_stream_event", kwargs, response_obj)

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._seen("async_log_success_event", kwargs, response_obj)

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self._seen("async_log_failure_event", kwargs, response_obj)

    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: Any, call_type: Any
    ) -> None:
        self._seen("async_pre_call_hook", data)

    async def async_post_call_success_hook(self, data: Any, user_api_key_dict: Any, response: Any) -> None:
        self._seen("async_post_call_success_hook", data, response)

    async def async_post_call_failure_hook(self, *args: Any, **kwargs: Any) -> None:
        self._seen("async_post_call_failure_hook", args, kwargs)


@pytest.fixture
def evidence(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Evidence, Capture, Recorder]]:
    """Debug logging everywhere, LiteLLM's redaction off, recording callbacks; all restored after."""
    found = Evidence()
    capture = Capture(found)
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    recorder = Recorder(found)
    loggers = [logging.getLogger(name) for name in DEBUG_LOGGERS]
    saved = [(lg, lg.level, lg.disabled) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.disabled = False  # another test may have called litellm._logging._disable_debugging()
    # Records of loggers that do not propagate reach only their own handlers: attach to all.
    attached = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for lg in attached:
        lg.addHandler(capture)
    monkeypatch.setattr(litellm._logging, "_ENABLE_SECRET_REDACTION", False, raising=False)
    monkeypatch.setenv("LITELLM_LOG", "DEBUG")
    monkeypatch.setattr(litellm, "callbacks", [recorder])
    monkeypatch.setattr(litellm, "success_callback", [lambda *args: found.add("success_callback", args)])
    monkeypatch.setattr(litellm, "failure_callback", [lambda *args: found.add("failure_callback", args)])
    monkeypatch.setattr(litellm, "input_callback", [lambda *args: found.add("input_callback", args)])
    monkeypatch.setattr(litellm, "suppress_debug_info", False)
    litellm._turn_on_debug()
    try:
        yield found, capture, recorder
    finally:
        for lg in attached:
            lg.removeHandler(capture)
        for lg, level, disabled in saved:
            lg.setLevel(level)
            lg.disabled = disabled


# -- what must never show ------------------------------------------------------------------------


def credential_forms(label: str, value: str) -> dict[str, str]:
    forms = {
        label: value,
        f"{label} (form-encoded)": quote_plus(value),
        f"{label} (percent-encoded)": quote(value, safe=""),
    }
    return {name: form for name, form in forms.items() if len(form) >= 8}


def jwt_forms(label: str, token: str) -> dict[str, str]:
    """A JWT, and its payload and signature alone (either half is enough to recognise or replay it)."""
    forms = {label: token}
    parts = token.split(".")
    if len(parts) == 3:
        forms[f"{label} payload"] = parts[1]
        forms[f"{label} signature"] = parts[2]
    return forms


def find_leaks(secrets: dict[str, str], pieces: list[tuple[str, str]]) -> list[str]:
    leaks = []
    for label, secret in secrets.items():
        places = sorted({where for where, text in pieces if secret in text})
        if places:
            leaks.append(f"{label} leaked into {len(places)} place(s): {places[:6]}")
    return leaks


# -- the servers and configuration ---------------------------------------------------------------


@dataclass
class World:
    tokens: TokenServer
    gateway: OpenAIUpstream
    elsewhere: Elsewhere
    private_key: str
    config_path: Path
    providers: dict[str, dict[str, Any]]


def provider(token_url: str, gateway: OpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "client_id": "audit-client",
        "client_secret": CLIENT_SECRET,
        "token_url": token_url,
        "api_base": gateway.base_url,
        "headers": {"Ocp-Apim-Subscription-Key": HEADER_VALUE},
        "retry": {"attempts": 2, "initial_delay": 0.01, "max_delay": 0.05},
        "timeout_seconds": 2,
    }
    settings.update(overrides)
    return {k: v for k, v in settings.items() if v is not None}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    private_key, public_key = rsa_key_pair()
    with (
        TokenServer() as tokens,
        OpenAIUpstream(tokens) as gateway,
        Elsewhere() as elsewhere,
        Redirector(elsewhere) as redirector,
    ):
        tokens.add_client("audit-client", CLIENT_SECRET)
        tokens.add_client("audit-jwt", public_key_pem=public_key)
        tokens.add_client("audit-rt", OTHER_SECRET, refresh_token=REFRESH_TOKEN, rotate_refresh_token=True)
        tokens.add_client("audit-scoped", OTHER_SECRET, allowed_scopes={"allowed"})
        url = tokens.token_url
        with TokenServer() as closed:
            unreachable = closed.token_url
        providers = {
            "audit_basic": provider(url, gateway),
            "audit_post": provider(url, gateway, token_endpoint_auth_method="client_secret_post"),
            "audit_jwt": provider(
                url,
                gateway,
                client_id="audit-jwt",
                client_secret=None,
                token_endpoint_auth_method="private_key_jwt",
                private_key=private_key,
                key_id="audit-key",
            ),
            "audit_rt": provider(
                url, gateway, client_id="audit-rt", client_secret=OTHER_SECRET, refresh_token=REFRESH_TOKEN
            ),
            "audit_badrt": provider(
                url,
                gateway,
                client_id="audit-rt",
                client_secret=OTHER_SECRET,
                refresh_token=BAD_REFRESH_TOKEN,
            ),
            "audit_wrong": provider(url, gateway, client_secret=OTHER_SECRET + "-wrong"),
            "audit_scope": provider(
                url, gateway, client_id="audit-scoped", client_secret=OTHER_SECRET, scope="forbidden"
            ),
            "audit_slow": provider(  # its own token (scope), so nothing cached serves it
                url,
                gateway,
                scope="slow",
                timeout_seconds=0.2,
                retry={"attempts": 1, "initial_delay": 0, "max_delay": 0},
            ),
            "audit_down": provider(
                unreachable, gateway, retry={"attempts": 1, "initial_delay": 0, "max_delay": 0}
            ),
        }
        providers["audit_redirected"] = {**provider(url, gateway), "api_base": redirector.url + "/v1"}
        for i in range(20):  # one fresh token identity (scope) per error path
            providers[f"audit_spare_{i}"] = provider(url, gateway, scope=f"spare{i}")
        config_path = tmp_path / "litellm_config.json"
        config_path.write_text(json.dumps({"oauth2_providers": providers}))
        yield World(tokens, gateway, elsewhere, private_key, config_path, providers)


# -- the paths -----------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


async def adrain(stream: Any) -> str:
    return "".join([chunk.choices[0].delta.content or "" async for chunk in await stream])


def call_shapes(model: str, embed: str) -> dict[str, Callable[[], Any]]:
    return {
        "completion": lambda: litellm.completion(model=model, messages=MESSAGES),
        "completion stream": lambda: "".join(
            c.choices[0].delta.content or ""
            for c in litellm.completion(model=model, messages=MESSAGES, stream=True)
        ),
        "acompletion": lambda: run(litellm.acompletion(model=model, messages=MESSAGES)),
        "acompletion stream": lambda: run(
            adrain(litellm.acompletion(model=model, messages=MESSAGES, stream=True))
        ),
        "embedding": lambda: litellm.embedding(model=embed, input=["leak audit"]),
        "aembedding": lambda: run(litellm.aembedding(model=embed, input=["leak audit"])),
    }


def router_shapes(provider_name: str) -> dict[str, Callable[[], Any]]:
    def router() -> litellm.Router:
        return litellm.Router(
            model_list=[
                {"model_name": "chat", "litellm_params": {"model": f"{provider_name}/chat"}},
                {"model_name": "embed", "litellm_params": {"model": f"{provider_name}/embed"}},
            ]
        )

    return {
        "Router.completion": lambda: router().completion(model="chat", messages=MESSAGES),
        "Router.acompletion": lambda: run(router().acompletion(model="chat", messages=MESSAGES)),
        "Router stream": lambda: "".join(
            c.choices[0].delta.content or ""
            for c in router().completion(model="chat", messages=MESSAGES, stream=True)
        ),
        "Router.embedding": lambda: router().embedding(model="embed", input=["leak audit"]),
    }


def attempt(found: Evidence, where: str, action: Callable[[], Any]) -> BaseException | None:
    """Run one path; its result and any exception are evidence."""
    try:
        found.add(f"{where}: result", action())
    except Exception as exc:
        found.exception(where, exc)
        return exc
    return None


def test_no_credential_or_token_leaks_on_any_path(
    world: World,
    evidence: tuple[Evidence, Capture, Recorder],
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
    proxy: Proxy,  # noqa: F811 - the fixture imported from test_proxy
) -> None:
    found, capture, recorder = evidence
    tokens, gateway = world.tokens, world.gateway
    failures: list[str] = []

    def expect_failure(where: str, action: Callable[[], Any]) -> None:
        if attempt(found, where, action) is None:
            failures.append(f"{where} succeeded although it should have failed")

    def expect_success(where: str, action: Callable[[], Any]) -> None:
        exc = attempt(found, where, action)
        if exc is not None:
            failures.append(f"{where} failed: {type(exc).__name__}: {str(exc)[:200]}")

    handler = OAuth2Handler(world.config_path)
    registry, reader = CollectorRegistry(), InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    export_to_prometheus(handler.cache, registry)
    export_to_opentelemetry(handler.cache, meter_provider)
    attach_service_logging(handler.cache)
    try:
        # Success: every authentication method and grant, every call shape, the Router.
        for name in ("audit_basic", "audit_post", "audit_jwt", "audit_rt"):
            for shape, action in call_shapes(f"{name}/chat", f"{name}/embed").items():
                expect_success(f"{name} {shape}", action)
        for shape, action in router_shapes("audit_basic").items():
            expect_success(shape, action)
        for i in range(2):  # the server rotates the refresh token at each use
            handler.cache.invalidate("audit_rt")
            expect_success(
                f"refresh token rotated {i}", call_shapes("audit_rt/chat", "audit_rt/embed")["completion"]
            )
        latest = handler.cache.get("audit_rt").refresh_token
        assert latest is not None, "the refresh token grant returned no rotated refresh token"
        latest_refresh_token = latest.get_secret_value()
        found.add("handler repr", repr(handler))
        found.add("cache repr", repr(handler.cache))
        found.add("config repr", repr(handler.config))

        # Retries that succeed: 503, 429 with Retry-After, a timeout, a reset; then a gateway 401.
        for name, inject in [
            ("503", lambda: tokens.fail_next(1, status=503)),
            ("429", lambda: tokens.fail_next(1, status=429, headers={"Retry-After": "0"})),
            ("timeout", lambda: tokens.delay_next(1, 5.0)),
            ("reset", lambda: tokens.reset_connection_next(1)),
        ]:
            handler.cache.invalidate("audit_basic")
            inject()
            expect_success(
                f"retry after {name}", call_shapes("audit_basic/chat", "audit_basic/embed")["completion"]
            )
        for shape in ("completion", "acompletion", "acompletion stream", "embedding"):
            gateway.fail_next(1, 401)
            expect_success(
                f"gateway 401 recovered ({shape})", call_shapes("audit_post/chat", "audit_post/embed")[shape]
            )

        # Background refresh (refresh ahead) with short-lived tokens, one of them failing.
        tokens.token_lifetime = 4
        handler.cache.invalidate("audit_jwt")
        expect_success("short-lived token", call_shapes("audit_jwt/chat", "audit_jwt/embed")["completion"])
        tokens.fail_next(3, status=503)
        for i in range(4):
            run(asyncio.sleep(0.7))
            expect_success(
                f"refresh ahead {i}", call_shapes("audit_jwt/chat", "audit_jwt/embed")["acompletion"]
            )
        tokens.token_lifetime = 3600

        # Every error the token endpoint can cause, on sync and async paths.
        for name in ("audit_wrong", "audit_badrt", "audit_scope", "audit_down"):
            for shape in ("completion", "acompletion", "acompletion stream", "embedding"):
                expect_failure(f"{name} {shape}", call_shapes(f"{name}/chat", f"{name}/embed")[shape])
        tokens.delay_next(2, 2.0)  # both attempts of audit_slow
        expect_failure("audit_slow timeout", call_shapes("audit_slow/chat", "audit_slow/embed")["completion"])
        # Each of these on a provider of its own, fetching for the first time (none cached, no
        # remembered failure); the faults queued are exactly the requests its retry policy makes.
        spare = iter(name for name in world.providers if name.startswith("audit_spare_"))
        for status, error, requests in [
            (503, None, 3),
            (429, "slow_down", 3),
            (400, "invalid_request", 1),
            (401, "unauthorized_client", 1),
        ]:
            tokens.fail_next(requests, status=status, error=error, error_description=f"echo {CLIENT_SECRET}")
            name = next(spare)
            shape = "acompletion" if status % 2 else "completion"
            expect_failure(
                f"token endpoint {status} {error}", call_shapes(f"{name}/chat", f"{name}/embed")[shape]
            )
        for kind in sorted(MALFORM_KINDS):
            tokens.malform_next(1, kind)
            name = next(spare)
            attempt(
                found,
                f"malformed token response {kind}",
                call_shapes(f"{name}/chat", f"{name}/embed")["acompletion"],
            )
        tokens.redirect_next(
            1, location=f"https://audit-client:{quote(CLIENT_SECRET, safe='')}@elsewhere.example/t"
        )
        name = next(spare)
        expect_failure("redirect", call_shapes(f"{name}/chat", f"{name}/embed")["completion"])

        # Every error the gateway can cause.
        for status, shape in [
            (401, "completion"),
            (401, "acompletion stream"),
            (403, "acompletion"),
            (500, "embedding"),
        ]:
            gateway.fail_next(2, status)
            expect_failure(
                f"gateway {status} {shape}", call_shapes("audit_basic/chat", "audit_basic/embed")[shape]
            )
        for shape, action in call_shapes("audit_redirected/chat", "audit_redirected/embed").items():
            expect_failure(f"gateway redirect {shape}", action)
        for request in world.elsewhere.seen:  # following the redirect would have sent it here
            found.add(f"request to another host after a gateway redirect: {request.path}", request.headers)
        # Metric names, label values and health, as exporters and the proxy would publish them.
        exposition = generate_latest(registry).decode()
        assert 'litellm_oauth2_token_requests_total{outcome="ok",provider="audit_basic"}' in exposition
        found.add("Prometheus exposition", exposition)
        found.add("OpenTelemetry metrics", reader.get_metrics_data().to_json())
        found.add("stats", handler.cache.stats())
        found.add("health", handler.cache.health())
    finally:
        handler.close()
        meter_provider.shutdown()

    # Configuration errors, with the secret in the file.
    bad_configs = {
        "wrong type": {
            "oauth2_providers": {
                "audit_bad": {**world.providers["audit_basic"], "client_secret": 12345678901}
            }
        },
        "unknown field": {
            "oauth2_providers": {
                "audit_bad": {**world.providers["audit_basic"], "client_sercet": CLIENT_SECRET}
            }
        },
        "bad url": {
            "oauth2_providers": {
                "audit_bad": {
                    **world.providers["audit_basic"],
                    "token_url": f"http://{CLIENT_SECRET}.example",
                }
            }
        },
        "bad key": {
            "oauth2_providers": {
                "audit_bad": {
                    **world.providers["audit_jwt"],
                    "private_key": world.private_key.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\nx", 1),
                }
            }
        },
    }
    for label, document in bad_configs.items():
        path = tmp_path / f"bad_{label.replace(' ', '_')}.json"
        path.write_text(json.dumps(document))
        expect_failure(f"configuration {label}", lambda path=path: OAuth2Handler(path))
    expect_failure("configuration missing env var", lambda: load_config(env_config(tmp_path)))

    # The CLI: check (table and JSON, one provider failing), token, errors.
    out_before = capfd.readouterr()
    found.add("stdout before the CLI", out_before.out)
    found.add("stderr before the CLI", out_before.err)
    cli_runs = [
        [
            "check",
            "--config",
            str(world.config_path),
            "--provider",
            "audit_basic",
            "--provider",
            "audit_wrong",
        ],
        [
            "check",
            "--json",
            "--config",
            str(world.config_path),
            "--provider",
            "audit_jwt",
            "--provider",
            "audit_rt",
        ],
        [
            "check",
            "--config",
            str(world.config_path),
            "--provider",
            "audit_down",
            "--provider",
            "audit_scope",
        ],
        ["token", "audit_wrong", "--config", str(world.config_path)],
        ["token", "audit_nope", "--config", str(world.config_path)],
        ["check", "--config", str(tmp_path / "bad_wrong_type.json")],
    ]
    for argv in cli_runs:
        code = cli_main(argv)
        output = capfd.readouterr()
        found.add(f"CLI {' '.join(argv[:2])} exit {code} stdout", output.out)
        found.add(f"CLI {' '.join(argv[:2])} exit {code} stderr", output.err)
    code = cli_main(["token", "audit_post", "--config", str(world.config_path)])
    output = capfd.readouterr()
    assert code == 0 and output.out.strip() in tokens.issued_tokens, (
        "the CLI token command did not print a token"
    )
    found.token_exempt.append(("CLI token stdout", output.out))
    found.add("CLI token stderr", output.err)

    # Redis: what the shared cache stores must be opaque.
    redis_values = redis_phase(world, found, tmp_path)

    # The LiteLLM proxy (a subprocess with --detailed_debug, from tests/test_proxy.py): its
    # responses and its whole output.
    proxy_credentials = proxy_phase(proxy, found)

    output = capfd.readouterr()
    found.add("stdout", output.out)
    found.add("stderr", output.err)

    # -- and none of it may contain a credential ----------------------------------------------
    credentials: dict[str, str] = {}
    for label, value in [
        ("client secret", CLIENT_SECRET),
        ("other client secret", OTHER_SECRET),
        ("refresh token", REFRESH_TOKEN),
        ("revoked refresh token", BAD_REFRESH_TOKEN),
        ("gateway header value", HEADER_VALUE),
    ]:
        credentials.update(credential_forms(label, value))
    basic = base64.b64encode(f"audit-client:{quote(CLIENT_SECRET, safe='')}".encode()).decode()
    credentials["Basic credentials"] = basic
    key_body = "".join(world.private_key.splitlines()[1:-1])
    for i in range(0, len(key_body) - 40, 200):
        credentials[f"private key (base64 at {i})"] = key_body[i : i + 40]
    rotated = {latest_refresh_token} | {
        value
        for request in tokens.requests
        for value in request.form.get("refresh_token", [])
        if value not in (REFRESH_TOKEN, BAD_REFRESH_TOKEN)
    }
    for i, value in enumerate(sorted(rotated)):
        credentials.update(credential_forms(f"rotated refresh token {i}", value))
    assertions = {value for request in tokens.requests for value in request.form.get("client_assertion", [])}
    for i, value in enumerate(sorted(assertions)):
        credentials.update(jwt_forms(f"client assertion {i}", value))
    issued = tokens.issued_tokens
    assert len(issued) > 20 and rotated and assertions, "the audit issued too few credentials to check"
    access_tokens: dict[str, str] = {}
    for i, token in enumerate(issued):
        access_tokens.update(jwt_forms(f"access token {i}", token))

    credentials.update(proxy_credentials)
    leaks = find_leaks({**credentials, **access_tokens}, found.pieces)
    leaks += find_leaks(credentials, found.token_exempt)
    leaks += find_leaks(
        {**credentials, **access_tokens, "client id": "audit-client", "jwt client id": "audit-jwt"},
        redis_values,
    )
    assert not leaks, "credentials leaked:\n" + "\n".join(leaks)
    assert not world.elsewhere.seen, (
        f"a gateway redirect was followed: {len(world.elsewhere.seen)} requests went to another host, "
        f"carrying {sorted(world.elsewhere.seen[0].headers)}"
    )

    # -- what was captured must be substantial, or the audit proves nothing -------------------
    assert not failures, f"paths did not behave as the audit expects, so they were not covered: {failures}"
    assert capture.records > 200, f"only {capture.records} log records were captured: logging was not audited"
    assert capture.structured_records > 20, "too few plugin log records to check their structure"
    assert not capture.unstructured, f"log records without provider and event: {capture.unstructured}"
    assert capture.litellm_records > 50, (
        f"only {capture.litellm_records} LiteLLM debug records: its debug output was not audited"
    )
    assert recorder.calls > 50, (
        f"callbacks saw only {recorder.calls} events: callback kwargs were not audited"
    )
    errors = [where for where, _ in found.pieces if where.endswith("str(exception)")]
    assert len(errors) >= 30, f"only {len(errors)} exceptions were captured: error texts were not audited"
    cli_out = [text for where, text in found.pieces if where.startswith("CLI") and text.strip()]
    assert len(cli_out) >= 6, "the CLI produced no output to audit"


def proxy_phase(running: Proxy, found: Evidence) -> dict[str, str]:
    """Every kind of traffic through the proxy, then its output; returns the proxy's credentials."""
    chat = {"model": "chat", "messages": [{"role": "user", "content": "leak audit via proxy"}]}
    texts: dict[str, str] = {}

    def post(where: str, path: str, payload: dict[str, Any], **kwargs: Any) -> int:
        with running.post(path, payload, **kwargs) as response:
            texts[where] = response.text
            found.add(f"proxy response: {where} (HTTP {response.status_code})", response.text)
            return response.status_code

    statuses = {
        "chat": post("chat", "/v1/chat/completions", chat),
        "stream": post("stream", "/v1/chat/completions", {**chat, "stream": True}, stream=True),
        "embeddings": post("embeddings", "/v1/embeddings", {"model": "embed", "input": ["leak audit"]}),
    }
    running.upstream.fail_next(1, 401)
    statuses["401 recovered"] = post("401 recovered", "/v1/chat/completions", chat)
    time.sleep(REFETCH_AFTER_401_SECONDS)  # a 401 sooner after the last one keeps the token
    before = running.tokens.token_requests
    running.upstream.fail_next(1, 401)
    running.tokens.fail_next(1, status=503)  # the new token takes one retry
    statuses["token retry"] = post("token retry", "/v1/chat/completions", chat)
    retried = running.tokens.token_requests - before
    time.sleep(REFETCH_AFTER_401_SECONDS)
    before = running.tokens.token_requests
    running.upstream.fail_next(1, 401)
    running.tokens.fail_next(1, status=401, error="invalid_client", error_description=f"echo {PROXY_SECRET}")
    statuses["token refused"] = post("token refused", "/v1/chat/completions", chat)
    refused_requests = running.tokens.token_requests - before
    time.sleep(1.2)  # the remembered failure expires
    running.upstream.fail_next(2, 401)
    statuses["401 twice"] = post("401 twice", "/v1/chat/completions", chat)
    time.sleep(1.0)  # the proxy logs after answering
    special = ("token refused", "401 twice")
    wrong = {where: status for where, status in statuses.items() if status != 200 and where not in special}
    if statuses["401 twice"] != 401:  # (429 would mean the deployment was put in cooldown)
        wrong["401 twice"] = statuses["401 twice"]
    # The refusal reaches the client, unless the proxy's Router retried the call after the
    # remembered failure expired and got a new token: the refused request was made either way.
    refused_seen = "invalid_client" in texts["token refused"] or refused_requests >= 2
    if refused_requests < 1 or not refused_seen:
        wrong["token refused"] = statuses["token refused"]
    assert not wrong and retried == 2, (
        f"proxy paths did not behave as the audit expects, so they were not covered: {wrong}, "
        f"{retried} token requests for one retry"
    )
    output = running.output()
    assert "LiteLLM:DEBUG" in output and "leak audit via proxy" in output, (
        "the proxy's debug output was not captured"
    )
    found.add("LiteLLM proxy output (stdout and stderr)", output)
    credentials = credential_forms("proxy client secret", PROXY_SECRET)
    credentials["proxy Basic credentials"] = base64.b64encode(
        f"{PROXY_CLIENT_ID}:{quote(PROXY_SECRET, safe='')}".encode()
    ).decode()
    for i, token in enumerate(running.tokens.issued_tokens):
        credentials.update(jwt_forms(f"proxy access token {i}", token))
    return credentials


def env_config(tmp_path: Path) -> Path:
    path = tmp_path / "env_config.json"
    settings = {
        "client_id": "c",
        "client_secret": "os.environ/LITELLM_OAUTH2_AUDIT_UNSET",
        "token_url": "https://i.example.com",
    }
    path.write_text(json.dumps({"oauth2_providers": {"audit_env": settings}}))
    return path


def redis_phase(world: World, found: Evidence, tmp_path: Path) -> list[tuple[str, str]]:
    """Calls through a Redis-backed cache; returns every raw Redis key and value as evidence."""
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server is not installed: the Redis cache could not be audited (apt-get install redis-server)"
        )
    from redis_server import RedisServer

    values: list[tuple[str, str]] = []
    with RedisServer() as server:
        config = {
            "oauth2_providers": {
                "audit_redis": world.providers["audit_basic"],
                "audit_redis_jwt": world.providers["audit_jwt"],
            },
            "cache": {"type": "redis", "url": server.url, "key_prefix": "audit:"},
        }
        path = tmp_path / "redis_config.json"
        path.write_text(json.dumps(config))
        handler = OAuth2Handler(path)
        try:
            for name in ("audit_redis", "audit_redis_jwt"):
                for shape, action in call_shapes(f"{name}/chat", f"{name}/embed").items():
                    attempt(found, f"redis {name} {shape}", action)
                world.gateway.fail_next(1, 401)
                attempt(
                    found, f"redis {name} 401", call_shapes(f"{name}/chat", f"{name}/embed")["completion"]
                )
            client = server.client()
            for key in client.keys("*"):
                kind = client.type(key).decode()
                value = client.get(key) if kind == "string" else repr(client.dump(key))
                values.append((f"redis key {key!r}", key.decode("latin-1")))
                values.append(
                    (
                        f"redis value of {key!r}",
                        value.decode("latin-1") if isinstance(value, bytes) else str(value),
                    )
                )
        finally:
            handler.close()
    assert values, "Redis holds nothing: the shared cache was not audited"
    found.pieces.extend(values)
    return values
