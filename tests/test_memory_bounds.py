"""What successive event loops leave behind: the plugin's per-loop HTTP clients and threads, counted.

An application that calls ``asyncio.run`` per job (a CLI, a Celery task, a notebook cell) makes a
new event loop each time; the plugin builds one HTTP client per loop, which must go with its loop.
The calls run in a fresh interpreter (``enable`` switches the plugin on for the whole process) and
report counts: ``httpx.AsyncClient`` objects alive that were not before the first measured loop
(LiteLLM's own, built once per process, are not counted), found by the garbage collector, and threads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SECRET

from litellm_oauth2.testing import OpenAIUpstream, TokenServer

LOOPS = 50
CHILD_SECONDS = 240.0  # bound on the child's run; never reached unless it hangs

CHILD = r"""
import asyncio, gc, json, os, sys, threading
import httpx, litellm
import litellm_oauth2
from litellm_oauth2.config import OAuth2Config

settings = json.loads(os.environ["MEMORY_TEST_PROVIDER"])
litellm_oauth2.enable(config=OAuth2Config.from_dict({"oauth2_providers": {"gw": settings}}))

def async_clients():
    return [o for o in gc.get_objects() if isinstance(o, httpx.AsyncClient)]

async def one_call():
    reply = await litellm.acompletion(model="gw/chat-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content

asyncio.run(one_call())  # warm-up: LiteLLM's own lazily built state exists from here on
gc.collect()
before = {id(c) for c in async_clients()}  # LiteLLM's own, built once per process
start = {"async_clients": 0, "threads": threading.active_count()}

def new_async_clients():
    return sum(1 for c in async_clients() if id(c) not in before)

peak_threads = 0
for _ in range(int(os.environ["MEMORY_TEST_LOOPS"])):
    asyncio.run(one_call())
    peak_threads = max(peak_threads, threading.active_count())
end_before_gc = new_async_clients()
gc.collect()
end = {"async_clients": new_async_clients(), "threads": threading.active_count()}
print(json.dumps({"start": start, "end": end, "end_before_gc": end_before_gc, "peak_threads": peak_threads}))
"""


@pytest.fixture
def servers() -> Iterator[tuple[TokenServer, OpenAIUpstream]]:
    with TokenServer() as token_server, OpenAIUpstream(token_server) as upstream:
        token_server.add_client("test-client", SECRET)
        yield token_server, upstream


@pytest.mark.xfail(
    strict=True,
    reason="the provider's per-loop client map is a WeakKeyDictionary whose values (the client's "
    "connections) refer to their loop: no loop and no client is ever released (one per asyncio.run)",
)
def test_per_loop_clients_are_released_after_successive_asyncio_runs(
    servers: tuple[TokenServer, OpenAIUpstream],
) -> None:
    token_server, upstream = servers
    settings = {
        "client_id": "test-client",
        "client_secret": SECRET,
        "token_url": token_server.token_url,
        "api_base": upstream.base_url,
        "timeout_seconds": 5,
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "MEMORY_TEST_PROVIDER": json.dumps(settings),
        "MEMORY_TEST_LOOPS": str(LOOPS),
    }
    env.pop("LITELLM_OAUTH2_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=CHILD_SECONDS
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert upstream.requests == LOOPS + 1 and token_server.token_requests == 1, report

    # Each loop's client goes with its loop: at most the last one's may still be collectable.
    assert report["end"]["async_clients"] <= 1, report
    # Threads: LiteLLM's and ours (a refresher, a deadline watchdog), not one per loop.
    assert report["peak_threads"] <= report["start"]["threads"] + 4, report
    assert report["end"]["threads"] <= report["start"]["threads"] + 2, report
