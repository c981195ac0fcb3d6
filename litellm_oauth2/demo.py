"""``litellm-oauth2 demo``: the main job, end to end, with nothing to configure.

Starts the loopback token server and the gateways of each ``api_style`` (OpenAI-compatible, Azure
OpenAI, Anthropic Messages) from ``litellm_oauth2.testing``,
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
from typing import TYPE_CHECKING, Any

from .testing import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer

__all__ = ["DemoFailure", "run_demo"]

if TYPE_CHECKING:
    from .handler import OAuth2Handler

DEMO_CLIENT_ID = "demo-client"
DEMO_SECRET = "demo-secret-not-for-production"
# The config names the secret's variable, as a real one should, so printing it shows no secret.
DEMO_SECRET_ENV = "DEMO_CLIENT_SECRET"
TOKEN_LIFETIME = 4.0
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
        AzureOpenAIUpstream(tokens) as azure,
        AnthropicUpstream(tokens) as claude,
        tempfile.TemporaryDirectory(prefix="litellm-oauth2-demo-") as scratch,
    ):
        tokens.add_client(DEMO_CLIENT_ID, DEMO_SECRET)
        config_file = Path(scratch) / "litellm_config.json"
        config_text = json.dumps(_config(tokens, gateway, azure, claude), indent=2)
        config_file.write_text(config_text)
        print(f"1. Loopback OAuth2 token server at {tokens.token_url}")
        print(f"   OpenAI-compatible gateway at {gateway.base_url} (accepts only tokens from that server)")
        print(f"   Azure OpenAI gateway at {azure.base_url}, Anthropic Messages gateway at {claude.base_url}")
        print(
            "   litellm_config.json used (the secret is read from "
            f"${DEMO_SECRET_ENV}; point token_url and api_base at your own servers):"
        )
        print(config_text)
        try:
            handler = _steps(config_file, tokens, gateway)
            try:
                _dialects(azure, claude)
            finally:
                handler.close()
        except DemoFailure as exc:
            print(f"\nFAILED: {exc}")
            return 1
    print(f"\nAll steps passed in {time.monotonic() - started:.1f} s.")
    return 0


def _config(
    tokens: TokenServer, gateway: OpenAIUpstream, azure: AzureOpenAIUpstream, claude: AnthropicUpstream
) -> dict[str, Any]:
    credentials = {
        "client_id": DEMO_CLIENT_ID,
        "client_secret": f"os.environ/{DEMO_SECRET_ENV}",
        "token_url": tokens.token_url,
        "scope": "llm.chat llm.embed",
    }
    return {
        "oauth2_providers": {
            "demo_provider": {**credentials, "api_base": gateway.base_url, "expiry_buffer_seconds": 1},
            "demo_azure": {**credentials, "api_style": "azure", "api_base": azure.base_url},
            "demo_claude": {**credentials, "api_style": "anthropic", "api_base": claude.base_url},
        }
    }


def _dialects(azure: AzureOpenAIUpstream, claude: AnthropicUpstream) -> None:
    """One call per other ``api_style``: the gateway saw its own dialect's path with a bearer token."""
    import litellm

    reply = litellm.completion(model="demo_azure/gpt-4o-deployment", messages=MESSAGES)
    sent = azure.recorded[-1]
    _expect(
        sent.route == "/openai/deployments/gpt-4o-deployment/chat/completions"
        and "api-key" not in sent.headers,
        f"the Azure call went to {sent.path}",
    )
    print(f"9. api_style azure: POST {sent.path} -> {reply.choices[0].message.content!r}")
    reply = litellm.completion(model="demo_claude/claude-haiku-4-5", messages=MESSAGES)
    sent = claude.recorded[-1]
    _expect(
        sent.route == "/v1/messages" and "x-api-key" not in sent.headers,
        f"the Anthropic call went to {sent.path}",
    )
    print(f"10. api_style anthropic: POST {sent.path} -> {reply.choices[0].message.content!r}")
    unauthorised = azure.unauthorized_requests + claude.unauthorized_requests
    _expect(unauthorised == 0, f"{unauthorised} requests reached a gateway without a valid token")


def _steps(config_file: Path, tokens: TokenServer, gateway: OpenAIUpstream) -> OAuth2Handler:
    import litellm

    from .handler import enable

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
    return handler
