"""The three loopback gateway dialects, driven by real LiteLLM (no plugin) over real HTTP.

Each test asserts what LiteLLM put on the wire (method, path, api-version) as the gateway
recorded it, and that LiteLLM parsed the gateway's answer into its own types. Model names are
ones LiteLLM's cost map knows where that changes what LiteLLM sends: for unknown models it
fakes a Responses API stream from a non-streamed request.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import litellm
import openai
import pytest

from litellm_oauth2.testing import AnthropicUpstream, AzureOpenAIUpstream, OpenAIUpstream, TokenServer
from litellm_oauth2.testing._openai_api import speech_bytes
from litellm_oauth2.testing.pytest_plugin import TEST_CLIENT_ID, TEST_CLIENT_SECRET

STATIC = "sk-static"
CLIENT = ("gw-client", "gw-secret")
MESSAGES = [{"role": "user", "content": "hello gateway"}]
GREETING = "Hello from upstream (client_id=static-api-key)"
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    with TokenServer() as server:
        server.add_client(*CLIENT)
        yield server


@pytest.fixture(scope="module")
def _openai_gateway(token_server: TokenServer) -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream(token_server, static_api_key=STATIC) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def _azure_gateway(token_server: TokenServer) -> Iterator[AzureOpenAIUpstream]:
    with AzureOpenAIUpstream(token_server, static_api_key=STATIC) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def _anthropic_gateway(token_server: TokenServer) -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(token_server, static_api_key=STATIC) as gateway:
        yield gateway


@pytest.fixture
def oai(_openai_gateway: OpenAIUpstream) -> Iterator[OpenAIUpstream]:
    _openai_gateway.reset()
    yield _openai_gateway


@pytest.fixture
def azure(_azure_gateway: AzureOpenAIUpstream) -> Iterator[AzureOpenAIUpstream]:
    _azure_gateway.reset()
    yield _azure_gateway


@pytest.fixture
def anthropic(_anthropic_gateway: AnthropicUpstream) -> Iterator[AnthropicUpstream]:
    _anthropic_gateway.reset()
    yield _anthropic_gateway


def issued_token(token_server: TokenServer) -> str:
    reply = httpx.post(token_server.token_url, data={"grant_type": "client_credentials"}, auth=CLIENT)
    access_token: str = reply.raise_for_status().json()["access_token"]
    return access_token


def routes(gateway: OpenAIUpstream | AzureOpenAIUpstream | AnthropicUpstream) -> list[tuple[str, str]]:
    return [(request.method, request.path) for request in gateway.recorded]


def output_text(response: Any) -> str:
    text: str = response.output[0].content[0].text
    return text


# -- OpenAI --------------------------------------------------------------------------------------


def test_openai_chat_sync_and_async(oai: OpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": oai.base_url, "api_key": STATIC}
    sync = litellm.completion(model="openai/test-model", messages=MESSAGES, **options)
    done = asyncio.run(litellm.acompletion(model="openai/test-model", messages=MESSAGES, **options))
    assert sync.choices[0].message.content == done.choices[0].message.content == GREETING
    assert routes(oai) == [("POST", "/v1/chat/completions")] * 2


def test_openai_responses_store_get_delete_and_previous_id(oai: OpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": oai.base_url, "api_key": STATIC}
    first = litellm.responses(model="openai/test-model", input="hi", **options)
    assert output_text(first) == GREETING
    (stored_id,) = oai.stored_responses  # LiteLLM wraps the id it hands out; the gateway keeps OpenAI's
    fetched = litellm.get_responses(response_id=first.id, custom_llm_provider="openai", **options)
    assert output_text(fetched) == GREETING
    second = litellm.responses(
        model="openai/test-model", input="again", previous_response_id=first.id, **options
    )
    assert output_text(second) == f"{GREETING} previous_response_id={stored_id}"
    assert oai.recorded[-1].json["previous_response_id"] == stored_id
    deleted = litellm.delete_responses(response_id=first.id, custom_llm_provider="openai", **options)
    assert deleted.deleted is True
    with pytest.raises(litellm.NotFoundError):
        litellm.get_responses(response_id=first.id, custom_llm_provider="openai", **options)
    assert routes(oai) == [
        ("POST", "/v1/responses"),
        ("GET", f"/v1/responses/{stored_id}"),
        ("POST", "/v1/responses"),
        ("DELETE", f"/v1/responses/{stored_id}"),
        ("GET", f"/v1/responses/{stored_id}"),
    ]
    with pytest.raises(litellm.BadRequestError, match="previous_response_not_found"):
        litellm.responses(model="openai/test-model", input="x", previous_response_id=first.id, **options)
    unstored = litellm.responses(model="openai/test-model", input="x", store=False, **options)
    assert output_text(unstored) == GREETING and len(oai.stored_responses) == 1


def test_openai_responses_stream_sync_and_async(oai: OpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": oai.base_url, "api_key": STATIC, "stream": True}
    events = list(litellm.responses(model="openai/gpt-4.1-mini", input="hi", **options))

    async def consume() -> list[Any]:
        stream = await litellm.aresponses(model="openai/gpt-4.1-mini", input="hi", **options)
        return [event async for event in stream]

    for streamed in (events, asyncio.run(consume())):
        kinds = [str(event.type.value if hasattr(event.type, "value") else event.type) for event in streamed]
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        deltas = [
            event.delta for event in streamed if kinds[streamed.index(event)] == "response.output_text.delta"
        ]
        assert "".join(deltas) == GREETING and len(deltas) == 3
        assert output_text(streamed[-1].response) == GREETING
    assert routes(oai) == [("POST", "/v1/responses")] * 2
    assert all(request.json["stream"] is True for request in oai.recorded)


def test_openai_aresponses(oai: OpenAIUpstream) -> None:
    response = asyncio.run(
        litellm.aresponses(model="openai/test-model", input="hi", api_base=oai.base_url, api_key=STATIC)
    )
    assert output_text(response) == GREETING and routes(oai) == [("POST", "/v1/responses")]


def test_openai_text_completion_json_and_stream(oai: OpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": oai.base_url, "api_key": STATIC, "prompt": "say hi"}
    whole = litellm.text_completion(model="openai/gpt-3.5-turbo-instruct", **options)
    assert whole.choices[0].text == f"{GREETING}: say hi"
    pieces = [
        chunk.choices[0].text
        for chunk in litellm.text_completion(model="openai/gpt-3.5-turbo-instruct", stream=True, **options)
    ]
    assert "".join(piece or "" for piece in pieces) == f"{GREETING}: say hi"
    assert routes(oai) == [("POST", "/v1/completions")] * 2 and oai.recorded[1].json["stream"] is True


def test_openai_image_generation(oai: OpenAIUpstream) -> None:
    as_b64 = litellm.image_generation(
        model="openai/gpt-image-1", n=2, prompt="a cat", api_base=oai.base_url, api_key=STATIC
    )
    assert len(as_b64.data) == 2 and base64.b64decode(as_b64.data[0].b64_json).startswith(b"\x89PNG")
    # LiteLLM 1.110.2 refuses response_format for every OpenAI image model; the SDK still sends it.
    sdk = openai.OpenAI(base_url=oai.base_url, api_key=STATIC, max_retries=0)
    as_url = sdk.images.generate(model="dall-e-3", prompt="a cat", response_format="url")
    assert as_url.data is not None and str(as_url.data[0].url).startswith("https://images.example.invalid/")
    assert routes(oai) == [("POST", "/v1/images/generations")] * 2
    assert oai.recorded[0].json == {"model": "gpt-image-1", "prompt": "a cat", "n": 2}


def test_openai_transcription_multipart(oai: OpenAIUpstream) -> None:
    result = litellm.transcription(
        model="openai/whisper-1", file=("clip.wav", WAV), api_base=oai.base_url, api_key=STATIC
    )
    assert result.text == f"{GREETING} heard clip.wav ({len(WAV)} bytes) with whisper-1"
    (request,) = oai.recorded
    assert (request.method, request.path) == ("POST", "/v1/audio/transcriptions")
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert request.form["model"] == ["whisper-1"] and request.files["file"].filename == "clip.wav"
    assert request.files["file"].data == WAV and WAV in request.body


def test_openai_speech(oai: OpenAIUpstream) -> None:
    audio = litellm.speech(
        model="openai/tts-1", input="hello there", voice="alloy", api_base=oai.base_url, api_key=STATIC
    )
    assert audio.content == speech_bytes("hello there")
    assert routes(oai) == [("POST", "/v1/audio/speech")]


def test_openai_moderation(oai: OpenAIUpstream) -> None:
    options: dict[str, Any] = {
        "model": "openai/omni-moderation-latest",
        "api_base": oai.base_url,
        "api_key": STATIC,
    }
    assert litellm.moderation(input="forbidden words", **options).results[0].flagged is True
    assert litellm.moderation(input="kind words", **options).results[0].flagged is False
    assert routes(oai) == [("POST", "/v1/moderations")] * 2
    # LiteLLM forwards the provider prefix in the body model: a fact of 1.110.2, not a gateway rule.
    assert oai.recorded[0].json["model"] == "openai/omni-moderation-latest"


def test_hosted_vllm_rerank(oai: OpenAIUpstream) -> None:
    ranked = litellm.rerank(
        model="hosted_vllm/test-model",
        query="red apple",
        documents=["blue sky", "a red apple", "green apple"],
        top_n=2,
        api_base=oai.base_url,
        api_key=STATIC,
    )
    assert [result["index"] for result in ranked.results] == [1, 2]
    assert ranked.results[0]["relevance_score"] == 1.0
    assert routes(oai) == [("POST", "/v1/rerank")]


def test_openai_refuses_bad_tokens_and_injects_faults(oai: OpenAIUpstream, token_server: TokenServer) -> None:
    options: dict[str, Any] = {
        "model": "openai/test-model",
        "messages": MESSAGES,
        "api_base": oai.base_url,
        "max_retries": 0,
    }
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(api_key="sk-wrong", **options)
    jwt_answer = litellm.completion(api_key=issued_token(token_server), **options)
    assert jwt_answer.choices[0].message.content == "Hello from upstream (client_id=gw-client)"
    oai.fail_next(1, 429, error="rate_limited")
    with pytest.raises(litellm.RateLimitError):
        litellm.completion(api_key=STATIC, **options)
    assert oai.requests == 3 and oai.unauthorized_requests == 1 and oai.authorized_requests == 2
    assert "sk-wrong" in oai.distinct_tokens


# -- Azure OpenAI --------------------------------------------------------------------------------

AZURE: dict[str, Any] = {"api_version": "2024-10-21", "azure_ad_token": STATIC}


def azure_client(gateway: AzureOpenAIUpstream, api_version: str = "2024-10-21") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.base_url, api_version=api_version, azure_ad_token=STATIC, max_retries=0
    )


def test_azure_chat_sync_async_and_stream(azure: AzureOpenAIUpstream) -> None:
    options: dict[str, Any] = {
        "model": "azure/dep1",
        "messages": MESSAGES,
        "api_base": azure.base_url,
        **AZURE,
    }
    assert litellm.completion(**options).choices[0].message.content == GREETING
    assert asyncio.run(litellm.acompletion(**options)).choices[0].message.content == GREETING
    streamed = "".join(
        chunk.choices[0].delta.content or "" for chunk in litellm.completion(stream=True, **options)
    )
    assert streamed == GREETING
    path = "/openai/deployments/dep1/chat/completions?api-version=2024-10-21"
    assert routes(azure) == [("POST", path)] * 3 and azure.deployments == ["dep1"] * 3
    assert azure.recorded[0].api_version == "2024-10-21"
    assert azure.recorded[0].headers["authorization"] == f"Bearer {STATIC}"


def test_azure_embeddings(azure: AzureOpenAIUpstream) -> None:
    result = litellm.embedding(model="azure/emb1", input=["a b"], api_base=azure.base_url, **AZURE)
    assert len(result.data[0]["embedding"]) == 8
    assert routes(azure) == [("POST", "/openai/deployments/emb1/embeddings?api-version=2024-10-21")]


def test_azure_text_completion(azure: AzureOpenAIUpstream) -> None:
    # azure_text passes azure_ad_token= on to the SDK's create() (a TypeError), so the token rides on a client.
    result = litellm.text_completion(
        model="azure_text/dep1",
        prompt="say",
        api_base=azure.base_url,
        api_version="2024-10-21",
        client=azure_client(azure),
    )
    assert result.choices[0].text == f"{GREETING}: say"
    assert routes(azure) == [("POST", "/openai/deployments/dep1/completions?api-version=2024-10-21")]


def test_azure_audio(azure: AzureOpenAIUpstream) -> None:
    heard = litellm.transcription(
        model="azure/whisper", file=("a.wav", WAV), api_base=azure.base_url, **AZURE
    )
    assert heard.text.startswith(f"{GREETING} heard a.wav")
    spoken = litellm.speech(model="azure/tts", input="hello", voice="alloy", api_base=azure.base_url, **AZURE)
    assert spoken.content == speech_bytes("hello")
    assert routes(azure) == [
        ("POST", "/openai/deployments/whisper/audio/transcriptions?api-version=2024-10-21"),
        ("POST", "/openai/deployments/tts/audio/speech?api-version=2024-10-21"),
    ]
    assert azure.recorded[0].files["file"].data == WAV


def test_azure_images(azure: AzureOpenAIUpstream) -> None:
    via_azure = litellm.image_generation(model="azure/img", prompt="cat", api_base=azure.base_url, **AZURE)
    via_client = litellm.image_generation(model="openai/img", prompt="cat", client=azure_client(azure))
    for result in (via_azure, via_client):
        assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
    assert (
        routes(azure) == [("POST", "/openai/deployments/img/images/generations?api-version=2024-10-21")] * 2
    )
    assert "model" not in azure.recorded[0].json  # a deployment needs no model in the body


def test_azure_responses(azure: AzureOpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": azure.base_url, **AZURE}
    created = litellm.responses(model="azure/dep1", input="hi", **options)
    assert output_text(created) == GREETING
    (stored_id,) = azure.stored_responses
    assert (
        output_text(litellm.get_responses(response_id=created.id, custom_llm_provider="azure", **options))
        == GREETING
    )
    litellm.delete_responses(response_id=created.id, custom_llm_provider="azure", **options)
    events = list(litellm.responses(model="azure/gpt-4.1-mini", input="hi", stream=True, **options))
    assert output_text(events[-1].response) == GREETING
    assert routes(azure) == [
        ("POST", "/openai/v1/responses?api-version=preview"),
        ("GET", f"/openai/v1/responses/{stored_id}?api-version=preview"),
        ("DELETE", f"/openai/v1/responses/{stored_id}?api-version=preview"),
        ("POST", "/openai/v1/responses?api-version=preview"),
    ]
    assert azure.recorded[-1].json["stream"] is True


def test_azure_v1_layout_through_the_openai_provider(azure: AzureOpenAIUpstream) -> None:
    options: dict[str, Any] = {"api_base": azure.base_url + "/openai/v1", "api_key": STATIC}
    assert (
        litellm.completion(model="openai/dep1", messages=MESSAGES, **options).choices[0].message.content
        == GREETING
    )
    assert (
        output_text(asyncio.run(litellm.aresponses(model="openai/dep1", input="hi", **options))) == GREETING
    )
    assert litellm.embedding(model="openai/dep1", input="x", **options).data[0]["index"] == 0
    assert routes(azure) == [
        ("POST", "/openai/v1/chat/completions"),
        ("POST", "/openai/v1/responses"),
        ("POST", "/openai/v1/embeddings"),
    ]
    assert azure.deployments == []


def test_azure_sdk_responses_path(azure: AzureOpenAIUpstream) -> None:
    """``/openai/responses?api-version=`` is where the SDK (and LiteLLM 1.108) send Responses calls."""
    client = azure_client(azure, "2025-04-01-preview")
    created = client.responses.create(model="dep1", input="hi")
    assert created.output_text == GREETING
    assert client.responses.retrieve(created.id).id == created.id
    client.responses.delete(created.id)
    assert routes(azure) == [
        ("POST", "/openai/responses?api-version=2025-04-01-preview"),
        ("GET", f"/openai/responses/{created.id}?api-version=2025-04-01-preview"),
        ("DELETE", f"/openai/responses/{created.id}?api-version=2025-04-01-preview"),
    ]


def test_azure_api_version_is_checked(azure: AzureOpenAIUpstream) -> None:
    bearer = {"Authorization": f"Bearer {STATIC}"}
    chat = azure.base_url + "/openai/deployments/dep1/chat/completions"
    missing = httpx.post(chat, json={"messages": MESSAGES}, headers=bearer)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "BadRequest"
    with pytest.raises(litellm.BadRequestError, match="API version not supported"):
        litellm.completion(
            model="azure/dep1",
            messages=MESSAGES,
            api_base=azure.base_url,
            api_version="2020-01-01",
            azure_ad_token=STATIC,
            max_retries=0,
        )
    unversioned_v1 = httpx.post(
        azure.base_url + "/openai/v1/chat/completions",
        json={"model": "d", "messages": MESSAGES},
        headers=bearer,
    )
    assert unversioned_v1.status_code == 200
    with AzureOpenAIUpstream(static_api_key=STATIC, api_versions=["2030-01-01"]) as strict:
        refused = httpx.post(
            strict.url + "/openai/deployments/d/embeddings?api-version=2024-10-21",
            json={"input": "x"},
            headers=bearer,
        )
        accepted = httpx.post(
            strict.url + "/openai/deployments/d/embeddings?api-version=2030-01-01",
            json={"input": "x"},
            headers=bearer,
        )
        assert (refused.status_code, accepted.status_code) == (400, 200)
    assert (
        httpx.post(
            azure.base_url + "/openai/deployments/d/unknown?api-version=2024-10-21", headers=bearer
        ).status_code
        == 404
    )


def test_azure_refuses_bad_tokens_and_injects_faults(
    azure: AzureOpenAIUpstream, token_server: TokenServer
) -> None:
    options: dict[str, Any] = {
        "model": "azure/dep1",
        "messages": MESSAGES,
        "api_base": azure.base_url,
        "api_version": "2024-10-21",
        "max_retries": 0,
    }
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(azure_ad_token="not-a-token", **options)
    with pytest.raises(litellm.AuthenticationError):  # an api-key header is no bearer token
        litellm.completion(api_key=STATIC, **options)
    assert azure.recorded[1].headers["api-key"] == STATIC
    answer = litellm.completion(azure_ad_token=issued_token(token_server), **options)
    assert answer.choices[0].message.content == "Hello from upstream (client_id=gw-client)"
    azure.fail_next(1, 401)
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(azure_ad_token=STATIC, **options)
    assert azure.requests == 4 and azure.unauthorized_requests == 2 and azure.authorized_requests == 2


# -- Anthropic -----------------------------------------------------------------------------------

CLAUDE = "anthropic/claude-haiku-4-5"


def anthropic_options(gateway: AnthropicUpstream) -> dict[str, Any]:
    return {
        "api_base": gateway.base_url,
        "api_key": "unused",
        "extra_headers": {"Authorization": f"Bearer {STATIC}"},
    }


def test_anthropic_completion_sync_async_and_stream(anthropic: AnthropicUpstream) -> None:
    options = anthropic_options(anthropic)
    assert (
        litellm.completion(model=CLAUDE, messages=MESSAGES, **options).choices[0].message.content == GREETING
    )
    done = asyncio.run(litellm.acompletion(model=CLAUDE, messages=MESSAGES, **options))
    assert done.choices[0].message.content == GREETING
    chunks = litellm.completion(model=CLAUDE, messages=MESSAGES, stream=True, **options)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == GREETING
    assert routes(anthropic) == [("POST", "/v1/messages")] * 3
    request = anthropic.recorded[-1]
    assert request.headers["anthropic-version"] == "2023-06-01" and request.json["stream"] is True
    assert request.headers["x-api-key"] == "unused"  # LiteLLM always sends its api_key too


def test_anthropic_messages_acreate(anthropic: AnthropicUpstream) -> None:
    options = anthropic_options(anthropic)

    async def both() -> tuple[Any, list[bytes]]:
        whole = await litellm.anthropic.messages.acreate(
            model=CLAUDE, messages=MESSAGES, max_tokens=50, **options
        )
        stream = await litellm.anthropic.messages.acreate(
            model=CLAUDE, messages=MESSAGES, max_tokens=50, stream=True, **options
        )
        return whole, [chunk async for chunk in stream]

    whole, chunks = asyncio.run(both())
    assert whole["content"] == [{"type": "text", "text": GREETING}] and whole["stop_reason"] == "end_turn"
    wire = b"".join(chunks).decode()
    events = [line.removeprefix("event: ") for line in wire.splitlines() if line.startswith("event: ")]
    assert events == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    datas = [
        json.loads(line.removeprefix("data: ")) for line in wire.splitlines() if line.startswith("data: ")
    ]
    assert "".join(d["delta"]["text"] for d in datas if d["type"] == "content_block_delta") == GREETING
    assert (
        routes(anthropic) == [("POST", "/v1/messages")] * 2 and anthropic.recorded[1].json["stream"] is True
    )


def test_anthropic_requires_version_and_answers_errors_in_its_shape(anthropic: AnthropicUpstream) -> None:
    url = anthropic.base_url + "/v1/messages"
    body = {"model": "claude-x", "max_tokens": 10, "messages": MESSAGES}
    unversioned = httpx.post(url, json=body, headers={"Authorization": f"Bearer {STATIC}"})
    assert unversioned.status_code == 400
    assert unversioned.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "anthropic-version: header is required"},
    }
    refused = httpx.post(url, json=body, headers={"anthropic-version": "2023-06-01", "x-api-key": STATIC})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    no_max = httpx.post(
        url,
        json={**body, "max_tokens": None},
        headers={"Authorization": f"Bearer {STATIC}", "anthropic-version": "2023-06-01"},
    )
    assert no_max.status_code == 400


def test_anthropic_refuses_bad_tokens_and_injects_faults(
    anthropic: AnthropicUpstream, token_server: TokenServer
) -> None:
    options: dict[str, Any] = {
        "model": CLAUDE,
        "messages": MESSAGES,
        "api_base": anthropic.base_url,
        "api_key": "unused",
        "max_retries": 0,
    }
    with pytest.raises(litellm.AuthenticationError):
        litellm.completion(extra_headers={"Authorization": "Bearer wrong"}, **options)
    answer = litellm.completion(
        extra_headers={"Authorization": f"Bearer {issued_token(token_server)}"}, **options
    )
    assert answer.choices[0].message.content == "Hello from upstream (client_id=gw-client)"
    anthropic.fail_next(1, 529, error="overloaded")
    with pytest.raises(litellm.InternalServerError):
        litellm.completion(extra_headers={"Authorization": f"Bearer {STATIC}"}, **options)
    assert (
        anthropic.requests == 3
        and anthropic.unauthorized_requests == 1
        and anthropic.authorized_requests == 2
    )


# -- plumbing ------------------------------------------------------------------------------------


def test_recorded_request_splits_query_and_multipart(oai: OpenAIUpstream) -> None:
    files = {"file": ("a b.wav", b"\x00\r\n--x\xff"), "model": (None, "whisper-1"), "language": (None, "en")}
    reply = httpx.post(
        oai.url + "/v1/audio/transcriptions?x=1&x=2&api-version=v",
        files=files,
        headers={"Authorization": f"Bearer {STATIC}"},
    )
    assert reply.status_code == 200
    request = oai.last_request
    assert request.route == "/v1/audio/transcriptions" and request.query == {
        "x": ["1", "2"],
        "api-version": ["v"],
    }
    assert request.api_version == "v" and request.form == {"model": ["whisper-1"], "language": ["en"]}
    upload = request.files["file"]
    assert (upload.filename, upload.data) == ("a b.wav", b"\x00\r\n--x\xff")
    assert (
        httpx.delete(
            oai.base_url + "/responses/resp_none", headers={"Authorization": f"Bearer {STATIC}"}
        ).status_code
        == 404
    )
    assert oai.last_request.method == "DELETE"


def test_plugin_fixtures_serve_jwks_verified_tokens(
    oauth2_token_server: TokenServer,
    azure_openai_upstream: AzureOpenAIUpstream,
    anthropic_upstream: AnthropicUpstream,
) -> None:
    reply = httpx.post(
        oauth2_token_server.token_url,
        data={"grant_type": "client_credentials"},
        auth=(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
    )
    access_token = reply.raise_for_status().json()["access_token"]
    chat = litellm.completion(
        model="azure/dep1",
        messages=MESSAGES,
        api_base=azure_openai_upstream.base_url,
        api_version="2025-04-01-preview",
        azure_ad_token=access_token,
    )
    claude = litellm.completion(
        model=CLAUDE,
        messages=MESSAGES,
        api_base=anthropic_upstream.base_url,
        api_key="unused",
        extra_headers={"Authorization": f"Bearer {access_token}"},
    )
    expected = f"Hello from upstream (client_id={TEST_CLIENT_ID})"
    assert chat.choices[0].message.content == claude.choices[0].message.content == expected
    assert azure_openai_upstream.distinct_tokens == anthropic_upstream.distinct_tokens == {access_token}
