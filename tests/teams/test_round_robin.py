"""Round-robin teams with assistants and tools, on the replay client."""

from __future__ import annotations

import json

from cadre import AgentId
from cadre.models import ModelResult, ReplayClient, ToolCall
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TeamState, TextMention
from cadre.teams.manager import MANAGER_TYPE

from .conftest import Harness, speakers


def forecast(city: str) -> str:
    """The weather in a city."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"{city}: sunny"


def call(name: str, **arguments: object) -> ModelResult:
    return ModelResult(
        tool_calls=(ToolCall(id=f"call-{name}", name=name, arguments=json.dumps(arguments)),),
        finish_reason="tool_calls",
    )


async def test_participants_speak_in_order_until_the_text_mention(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient(["draft one", "draft two"]))
    critic = Assistant("critic", model=ReplayClient(["make it shorter", "APPROVE"]))
    team = RoundRobinTeam("review", [writer, critic], termination=TextMention(text="APPROVE"))
    info, messages = await harness.run(team, "Write a haiku")
    assert speakers(messages) == ["user", "writer", "critic", "writer", "critic"]
    assert [m.content for m in messages] == [
        "Write a haiku",
        "draft one",
        "make it shorter",
        "draft two",
        "APPROVE",
    ]
    assert info.status == "completed"
    assert info.result == "APPROVE"
    assert info.stop_reason == "critic mentioned 'APPROVE'"


async def test_each_participant_sees_what_others_said_since_its_last_turn(
    harness: Harness,
) -> None:
    writer_model = ReplayClient(["draft one", "draft two"])
    writer = Assistant("writer", system_message="You write.", model=writer_model)
    critic = Assistant("critic", model=ReplayClient(["shorter"]))
    team = RoundRobinTeam("review2", [writer, critic], termination=MaxMessages(max_messages=4))
    info, messages = await harness.run(team, "Write")
    assert info.stop_reason == "maximum of 4 messages reached"
    assert len(messages) == 4
    second_call = writer_model.calls[1]
    assert [(m.role, m.content) for m in second_call] == [
        ("system", "You write."),
        ("user", "Write"),
        ("assistant", "draft one"),
        ("user", "shorter"),
    ]
    assert second_call[3].name == "critic"


async def test_token_usage_is_recorded_per_message_agent_and_task(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient(["one two three"]))
    critic = Assistant("critic", model=ReplayClient(["four five"]))
    team = RoundRobinTeam("usage", [writer, critic], termination=MaxMessages(max_messages=3))
    info, messages = await harness.run(team, "go now")
    assert [m.usage.completion_tokens for m in messages] == [0, 3, 2]
    assert info.usage_by_agent["writer"].completion_tokens == 3
    assert info.usage_by_agent["critic"].completion_tokens == 2
    assert info.usage.completion_tokens == 5
    assert (
        info.usage.prompt_tokens
        == messages[1].usage.prompt_tokens + messages[2].usage.prompt_tokens
    )


async def test_tool_calls_run_and_their_results_answer_the_turn(harness: Harness) -> None:
    researcher = Assistant(
        "researcher", model=ReplayClient([call("forecast", city="Lisbon")]), tools=[forecast]
    )
    team = RoundRobinTeam("tools", [researcher], termination=MaxMessages(max_messages=2))
    info, messages = await harness.run(team, "Weather?")
    assert [(m.kind, m.content) for m in messages[1:]] == [
        ("tool_call", json.dumps([call("forecast", city="Lisbon").tool_calls[0].model_dump()])),
        ("tool_result", "Lisbon: sunny"),
        ("text", "Lisbon: sunny"),
    ]
    assert info.status == "completed" and info.result == "Lisbon: sunny"


async def test_tool_errors_go_back_to_the_model_and_reflection_answers(harness: Harness) -> None:
    model = ReplayClient([call("forecast", city="Atlantis"), call("nowhere"), "cannot tell"])
    researcher = Assistant("researcher", model=model, tools=[forecast], reflect_on_tool_use=True)
    team = RoundRobinTeam("errors", [researcher], termination=MaxMessages(max_messages=2))
    info, messages = await harness.run(team, "Weather in Atlantis?")
    results = [m for m in messages if m.kind == "tool_result"]
    assert [r.is_error for r in results] == [True, True]
    assert "LookupError: no such city" in results[0].content
    assert "no tool named 'nowhere'" in results[1].content
    assert model.calls[1][-1].role == "tool" and "LookupError" in model.calls[1][-1].content
    assert info.status == "completed" and info.result == "cannot tell"


async def test_a_failing_model_fails_the_task_with_the_reason(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient([]))
    team = RoundRobinTeam("broken", [writer], termination=MaxMessages(max_messages=5))
    info, _ = await harness.run(team, "Write")
    assert info.status == "failed"
    assert "writer: model call failed: ModelError" in (info.stop_reason or "")


async def test_the_manager_state_holds_the_termination_condition_as_data(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient(["a", "b"]))
    stop = TextMention(text="b") | MaxMessages(max_messages=9)
    team = RoundRobinTeam("stored", [writer], termination=stop)
    harness_team = team.register(harness.registry)
    task_id = await harness.tasks.submit(harness_team, "go")
    await harness.runtime.run_until_idle()
    record = await harness.runtime.store.load(AgentId(MANAGER_TYPE, task_id))
    state = TeamState.model_validate_json(record.state or "{}")
    assert state.termination == stop
    assert state.status == "completed" and [m.content for m in state.recent] == ["go", "a", "b"]
    assert state.messages == 3 and state.last_text == "b"
