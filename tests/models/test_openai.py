"""The OpenAI-API client through the real openai SDK, with HTTP answered by httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from cadre.errors import ConfigurationError, ModelError
from cadre.models import LimitedModel, LLMMessage, Tool, ToolCall, client_from_spec
from cadre.models.openai import OpenAIClient

try:  # the openai SDK moved from httpx to its fork httpx2 (same API); use the one it uses
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older SDKs
    import httpx  # type: ignore[no-redef]

Handler = Callable[[httpx.Request], httpx.Response]


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


class Recorder:
    """Answers requests in order and keeps them."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response

    def body(self, i: int = -1) -> dict[str, Any]:
        return json.loads(self.requests[i].content)


def ok(message: dict[str, Any], finish: str = "stop") -> httpx.Response:
    return httpx.Response(200, json=completion(message, finish))


def http(recorder: Recorder) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(recorder))


def weather(city: str) -> str:
    """The weather in a city."""
    return city


async def test_a_completion_with_tools_round_trips_through_the_sdk() -> None:
    calls = [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Lisbon"}'},
        }
    ]
    recorder = Recorder(
        ok({"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls")
    )
    client = OpenAIClient.openai("gpt-test", api_key="k", http_client=http(recorder), max_retries=0)
    history = [
        LLMMessage(role="system", content="be brief"),
        LLMMessage(role="user", content="hi", name="writer"),
        LLMMessage(role="assistant", tool_calls=(ToolCall(id="c0", name="weather"),)),
        LLMMessage(role="tool", content="sunny", tool_call_id="c0"),
    ]
    result = await client.create(history, tools=[Tool.from_function(weather).spec])
    await client.close()
    assert result.tool_calls == (ToolCall(id="c1", name="weather", arguments='{"city":"Lisbon"}'),)
    assert result.finish_reason == "tool_calls"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (11, 7)
    request = recorder.requests[0]
    assert request.url == "https://api.openai.com/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k"
    body = recorder.body()
    assert body["model"] == "gpt-test"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi", "name": "writer"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c0", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": "sunny"},
    ]
    assert body["tools"][0]["function"]["name"] == "weather"
    assert body["tools"][0]["function"]["parameters"]["required"] == ["city"]


class Choice(BaseModel):
    speaker: Literal["a", "b"]


async def test_output_schemas_are_sent_as_json_schema_response_formats() -> None:
    recorder = Recorder(ok({"role": "assistant", "content": '{"speaker": "a"}'}))
    client = OpenAIClient.openai("gpt-test", api_key="k", http_client=http(recorder), max_retries=0)
    result = await client.create([LLMMessage(role="user", content="pick")], output_schema=Choice)
    await client.close()
    assert Choice.model_validate_json(result.content).speaker == "a"
    response_format = recorder.body()["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["schema"]["properties"]["speaker"]["enum"] == ["a", "b"]


async def test_429_and_5xx_are_retried_with_backoff() -> None:
    fast = {"retry-after-ms": "1"}
    recorder = Recorder(
        httpx.Response(429, headers=fast, json={"error": {"message": "slow down"}}),
        httpx.Response(503, headers=fast, json={"error": {"message": "busy"}}),
        ok({"role": "assistant", "content": "done"}),
    )
    client = OpenAIClient.openai("gpt-test", api_key="k", http_client=http(recorder), max_retries=3)
    result = await client.create([LLMMessage(role="user", content="hi")])
    await client.close()
    assert result.content == "done" and len(recorder.requests) == 3


async def test_errors_after_the_retries_are_model_errors() -> None:
    fast = {"retry-after-ms": "1"}
    recorder = Recorder(
        httpx.Response(500, headers=fast, json={"error": {"message": "boom"}}),
        httpx.Response(500, headers=fast, json={"error": {"message": "boom"}}),
        httpx.ReadTimeout("too slow"),
        httpx.ReadTimeout("too slow"),  # timeouts are retried too
    )
    client = OpenAIClient.openai("gpt-test", api_key="k", http_client=http(recorder), max_retries=1)
    with pytest.raises(ModelError, match="InternalServerError"):
        await client.create([LLMMessage(role="user", content="hi")])
    with pytest.raises(ModelError, match="APITimeoutError"):
        await client.create(
            [LLMMessage(role="user", content="hi")],
        )
    await client.close()


async def test_azure_openai_with_a_key_calls_the_deployment() -> None:
    recorder = Recorder(ok({"role": "assistant", "content": "hello"}))
    client = OpenAIClient.azure(
        "my-gpt",
        endpoint="https://res.openai.azure.com",
        api_key="azkey",
        http_client=http(recorder),
        max_retries=0,
    )
    await client.create([LLMMessage(role="user", content="hi")])
    await client.close()
    request = recorder.requests[0]
    assert request.url.path == "/openai/deployments/my-gpt/chat/completions"
    assert request.url.params["api-version"] == "2024-10-21"
    assert request.headers["api-key"] == "azkey"


async def test_azure_openai_with_entra_id_sends_the_bearer_token() -> None:
    recorder = Recorder(ok({"role": "assistant", "content": "hello"}))
    asked: list[str] = []

    async def token_provider() -> str:
        asked.append("token")
        return "entra-token"

    client = OpenAIClient.azure(
        "my-gpt",
        endpoint="https://res.openai.azure.com",
        azure_ad_token_provider=token_provider,
        http_client=http(recorder),
        max_retries=0,
    )
    await client.create([LLMMessage(role="user", content="hi")])
    await client.close()
    assert recorder.requests[0].headers["authorization"] == "Bearer entra-token"
    assert asked == ["token"]


async def test_specs_choose_the_endpoint() -> None:
    local = client_from_spec("openai-compatible:llama3.2@http://127.0.0.1:11434/v1", env={})
    assert isinstance(local, LimitedModel) and isinstance(local.client, OpenAIClient)
    assert local.model_name == "openai-compatible:llama3.2"
    assert str(local.client._client.base_url) == "http://127.0.0.1:11434/v1/"
    await local.client.close()
    azure = client_from_spec(
        "azure-openai:dep",
        env={
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
            "AZURE_OPENAI_API_KEY": "k",
            "CADRE_MODEL_TIMEOUT": "5",
        },
    )
    assert isinstance(azure, LimitedModel) and isinstance(azure.client, OpenAIClient)
    assert azure.model_name == "azure-openai:dep"
    assert azure.client._client.timeout == 5.0
    await azure.client.close()
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        client_from_spec("openai:gpt-4o", env={})
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        client_from_spec("azure-openai:dep", env={"AZURE_OPENAI_API_KEY": "k"})
    with pytest.raises(ConfigurationError, match="<model>@<url>"):
        client_from_spec("openai-compatible:llama3", env={})
