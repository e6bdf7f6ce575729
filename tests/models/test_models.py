"""The model port's local clients (replay, offline) and tools from plain functions."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

from cadre.errors import ConfigurationError, ModelError
from cadre.models import (
    LLMMessage,
    ModelResult,
    OfflineClient,
    ReplayClient,
    Tool,
    ToolCall,
    ToolSpec,
    client_from_spec,
)


def forecast(city: str, days: int = 1) -> str:
    """The weather forecast for a city."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"{city}: sunny for {days} days"


async def test_tool_schema_comes_from_the_signature_and_docstring() -> None:
    spec = Tool.from_function(forecast).spec
    assert spec.name == "forecast"
    assert spec.description == "The weather forecast for a city."
    assert spec.parameters["properties"] == {
        "city": {"type": "string"},
        "days": {"type": "integer", "default": 1},
    }
    assert spec.parameters["required"] == ["city"]


async def test_tool_errors_are_returned_as_error_outcomes() -> None:
    tool = Tool.from_function(forecast)
    ok = await tool.call('{"city": "Lisbon", "days": 3}')
    assert (ok.content, ok.is_error) == ("Lisbon: sunny for 3 days", False)
    raised = await tool.call('{"city": "Atlantis"}')
    assert raised.is_error and "LookupError: no such city" in raised.content
    invalid = await tool.call('{"days": "many"}')
    assert invalid.is_error and "invalid arguments" in invalid.content
    not_json = await tool.call("{")
    assert not_json.is_error


async def test_async_tools_are_awaited() -> None:
    async def lookup(term: str) -> dict[str, str]:
        """Look a term up."""
        return {"term": term}

    outcome = await Tool.from_function(lookup).call('{"term": "tram"}')
    assert json.loads(outcome.content) == {"term": "tram"}


async def test_replay_client_returns_scripted_responses_in_order_then_fails() -> None:
    call = ToolCall(id="c1", name="forecast", arguments="{}")
    client = ReplayClient(["one two", ModelResult(tool_calls=(call,), finish_reason="tool_calls")])
    first = await client.create([LLMMessage(role="user", content="hello there world")])
    assert first.content == "one two"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (3, 2)
    second = await client.create([])
    assert second.tool_calls == (call,)
    assert len(client.calls) == 2
    with pytest.raises(ModelError, match="ran out"):
        await client.create([])


class Choice(BaseModel):
    speaker: Literal["planner", "writer"]
    reason: str
    is_request_satisfied: bool


async def test_offline_client_is_labelled_deterministic_and_follows_schemas() -> None:
    client = OfflineClient()
    messages = [
        LLMMessage(role="system", content="You are a travel planner. Say APPROVE when done."),
        LLMMessage(role="user", content="Plan a trip to Lisbon"),
    ]
    first = await client.create(messages)
    assert first.content.startswith("[offline]") and "travel planner" in first.content
    assert first == await client.create(messages)
    assert "APPROVE" not in first.content
    later = await client.create([*messages, LLMMessage(role="assistant", content=first.content)])
    assert later.content.endswith("APPROVE")
    structured = await client.create(messages, output_schema=Choice)
    choice = Choice.model_validate_json(structured.content)
    assert choice.speaker == "planner" and choice.is_request_satisfied is False


async def test_offline_client_calls_the_first_tool_then_answers_with_its_result() -> None:
    client = OfflineClient()
    spec = Tool.from_function(forecast).spec
    messages = [LLMMessage(role="user", content="Weather in Lisbon?")]
    asked = await client.create(messages, tools=[spec])
    [call] = asked.tool_calls
    assert call.name == "forecast" and "city" in json.loads(call.arguments)
    answer = await client.create(
        [*messages, LLMMessage(role="tool", content="Lisbon: sunny", tool_call_id=call.id)],
        tools=[spec],
    )
    assert answer.content.startswith("[offline]") and "Lisbon: sunny" in answer.content


def test_client_from_spec_defaults_to_offline_and_rejects_unknown_kinds() -> None:
    assert client_from_spec("").model_name == "offline"
    assert client_from_spec("offline").model_name == "offline"
    with pytest.raises(ConfigurationError, match="unknown model kind"):
        client_from_spec("claude:x")
    with pytest.raises(ConfigurationError, match="use offline"):
        client_from_spec("gpt-4o")


async def test_offline_client_hands_off_to_each_target_once_then_uses_its_tools() -> None:
    client = OfflineClient()
    handoffs = [ToolSpec(name=f"transfer_to_{t}", description="", parameters={}) for t in "ab"]
    tools = [Tool.from_function(forecast).spec, *handoffs]
    messages = [LLMMessage(role="user", content="Weather in Lisbon?")]
    names = []
    for _ in range(3):
        result = await client.create(messages, tools=tools)
        [call] = result.tool_calls
        names.append(call.name)
        messages += [
            LLMMessage(role="assistant", content="", tool_calls=(call,)),
            LLMMessage(role="tool", content="ok", tool_call_id=call.id),
            LLMMessage(role="user", content="back to you"),
        ]
    assert names == ["transfer_to_a", "transfer_to_b", "forecast"]
    # a tool has answered since the last message it was sent: it answers in text
    done = await client.create([*messages[:-1]], tools=tools)
    assert done.content.startswith("[offline]") and not done.tool_calls


async def test_offline_delay_makes_every_reply_take_that_long() -> None:
    import time

    slow = client_from_spec("offline:0.2")
    assert isinstance(slow, OfflineClient) and slow.delay == 0.2
    started = time.monotonic()
    answer = await slow.create([LLMMessage(role="user", content="hi")])
    assert time.monotonic() - started >= 0.2 and answer.content.startswith("[offline]")
    assert client_from_spec("offline:1.5s").delay == 1.5  # type: ignore[attr-defined]
    for wrong in ("offline:slow", "offline:-1", "offline:601"):
        with pytest.raises(ConfigurationError, match="delay per reply in seconds"):
            client_from_spec(wrong)
