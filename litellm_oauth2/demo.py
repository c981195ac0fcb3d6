"""``litellm-oauth2 demo``: the main job, end to end, with nothing to configure.

Starts the loopback token server and OpenAI-compatible gateway from ``litellm_oauth2.testing``,
writes a ``litellm_config.json`` for them (kept and shown, as a template to copy), switches the
plugin on and sends real LiteLLM calls for ``demo_provider/...``, checking each step against the
counts both servers keep. HS256 tokens keep it to a plain install: no PyJWT or cryptography.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .testing import OpenAIUpstream, TokenServer

__all__ = ["DemoFailure", "run_demo"]

DEMO_CLIENT_ID = "demo-client"
DEMO_SECRET = "demo-secret-not-for-production"
# The config names the secret's variable, as a real one should, so printing it shows no secret.
DEMO_SECRET_ENV = "DEMO_CLIENT_SECRET"
TOKEN_LIFETIME = 3.0
MESSAGES = [{"role": "user", "content": "Say hello"}]


class DemoFailure(AssertionError):
    """A step did not behave as the plugin promises."""


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoFailure(what)


def run_demo() -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ[DEMO_SECRET_ENV] = DEMO_SECRET
    started = time.monotonic()
    token_server = TokenServer(token_lifetime=TOKEN_LIFETIME, key_type="HS256")
    with (
        token_server as tokens,
        OpenAIUpstream(tokens) as gateway,
        tempfile.TemporaryDirectory(prefix="litellm-oauth2-demo-") as scratch,
    ):
        tokens.add_client(DEMO_CLIENT_ID, DEMO_SECRET)
        config_file = Path(scratch) / "litellm_config.json"
        config_text = json.dumps(_config(tokens, gateway), indent=2)
        config_file.write_text(config_text)
        print(f"1. Loopback OAuth2 token server at {tokens.token_url}")
        print(f"   OpenAI-compatible gateway at {gateway.base_url} (accepts only tokens from that server)")
        print(
            "   litellm_config.json used (the secret is read from "
            f"${DEMO_SECRET_ENV}; point token_url and api_base at your own servers):"
        )
        print(config_text)
        try:
            _steps(config_file, tokens, gateway)
        except DemoFailure as exc:
            print(f"\nFAILED: {exc}")
            return 1
    print(f"\nAll steps passed in {time.monotonic() - started:.1f} s.")
    return 0


def _config(tokens: TokenServer, gateway: OpenAIUpstream) -> dict[str, Any]:
    return {
        "oauth2_providers": {
            "demo_provider": {
                "client_id": DEMO_CLIENT_ID,
                "client_secret": f"os.environ/{DEMO_SECRET_ENV}",
                "token_url": tokens.token_url,
                "scope": "llm.chat llm.embed",
                "api_base": gateway.base_url,
                "expiry_buffer_seconds": 1,
            }
        }
    }


def _steps(config_file: Path, tokens: TokenServer, gateway: OpenAIUpstream) -> None:
    import litellm

    from .hook import enable

    litellm.suppress_debug_info = True
    handler = enable(config_file)
    print("2. litellm_oauth2.enable(): 'demo_provider/...' models now carry an OAuth2 bearer token")

    reply = litellm.completion(model="demo_provider/chat-model", messages=MESSAGES)
    _expect(tokens.token_requests == 1, f"expected 1 token request, saw {tokens.token_requests}")
    print(f"3. litellm.completion -> {reply.choices[0].message.content!r}")
    print(
        f"   token fetched once (token requests: {tokens.token_requests}, gateway requests: {gateway.requests})"
    )

    for _ in range(3):
        litellm.completion(model="demo_provider/chat-model", messages=MESSAGES)
    _expect(tokens.token_requests == 1, "the cached token was not reused")
    print(f"4. 3 more completions reuse the cached token (token requests: {tokens.token_requests})")

    async def stream() -> str:
        response = await litellm.acompletion(model="demo_provider/chat-model", messages=MESSAGES, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in response])

    streamed = asyncio.run(stream())
    embedded = litellm.embedding(model="demo_provider/embed-model", input=["OAuth2", "LiteLLM"])
    _expect(bool(streamed) and len(embedded.data) == 2, "streaming or embedding returned nothing")
    print(f"5. acompletion(stream=True) -> {streamed!r}; embedding -> {len(embedded.data)} vectors")

    waits_before = handler.cache.stats("demo_provider").waits
    deadline = time.monotonic() + TOKEN_LIFETIME
    calls = 0
    while time.monotonic() < deadline:
        litellm.completion(model="demo_provider/chat-model", messages=MESSAGES)
        calls += 1
        time.sleep(0.05)
    _expect(tokens.token_requests >= 2, "the token was not refreshed ahead of expiry")
    stats = handler.cache.stats("demo_provider")
    _expect(stats.waits == waits_before, "a call waited for the token endpoint during refresh")
    print(
        f"6. {calls} calls over one {TOKEN_LIFETIME:.0f} s token lifetime: refreshed ahead of expiry in the "
        f"background ({stats.background_refreshes} refreshes, token requests: {tokens.token_requests}), "
        "no call waited"
    )

    authorized_before = gateway.authorized_requests
    gateway.reset()
    before = tokens.token_requests
    gateway.fail_next(1, 401)
    reply = litellm.completion(model="demo_provider/chat-model", messages=MESSAGES)
    _expect(gateway.requests == 2 and tokens.token_requests == before + 1, "the 401 was not recovered")
    print(
        "7. gateway answered 401 once (token revoked): token invalidated, one new token, call retried "
        f"-> {reply.choices[0].message.content!r} (gateway requests: {gateway.requests})"
    )
    unauthorised = gateway.unauthorized_requests
    _expect(unauthorised == 0, f"{unauthorised} requests reached the gateway without a valid token")
    print(
        f"8. totals: {tokens.token_requests} token requests, "
        f"{authorized_before + gateway.authorized_requests} authorized gateway requests, 0 without a valid token"
    )
    handler.close()
