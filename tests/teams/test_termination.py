"""Every termination condition, alone and combined, as data and in a running team."""

from __future__ import annotations

import json

from cadre.models import ModelResult, ReplayClient, ToolCall, Usage
from cadre.teams import (
    AllOf,
    AnyOf,
    Assistant,
    ChatMessage,
    External,
    FunctionCall,
    MaxMessages,
    RoundRobinTeam,
    RunView,
    SourceMatch,
    TextMention,
    Timeout,
    TokenUsage,
    UserProxy,
)
from cadre.teams.termination import condition_adapter

from .conftest import Harness, speakers


def echo(n: int) -> str:
    """Echo a number."""
    return f"echo {n}"


def test_conditions_round_trip_as_a_discriminated_union() -> None:
    condition = (TextMention(text="DONE", sources=["critic"]) | MaxMessages(max_messages=5)) & (
        TokenUsage(max_total_tokens=100) | Timeout(seconds=3) | External()
    )
    assert isinstance(condition, AllOf) and isinstance(condition.conditions[0], AnyOf)
    assert condition_adapter.validate_json(condition.model_dump_json()) == condition


def test_text_mention_checks_the_task_and_only_the_named_sources() -> None:
    view = RunView(
        [ChatMessage(source="user", content="say DONE"), ChatMessage(source="w", content="DONE")],
        count=2,
        usage=Usage(),
    )
    assert TextMention(text="DONE", sources=["critic"]).check(view) is None
    assert TextMention(text="DONE", sources=["w"]).check(view) == "w mentioned 'DONE'"
    task_only = RunView([ChatMessage(source="user", content="say DONE")], count=1)
    assert TextMention(text="DONE").check(task_only) == "user mentioned 'DONE'"  # as AutoGen
    tool = ChatMessage(source="w", content="DONE", kind="tool_result", tool_name="t")
    assert TextMention(text="DONE").check(RunView([tool], count=3)) == "w mentioned 'DONE'"


def test_conditions_look_only_at_what_is_new_since_the_last_check() -> None:
    old = ChatMessage(source="w", content="DONE")
    mention = TextMention(text="DONE")
    # "DONE" was said before the last check: this check sees only the new message
    assert mention.check(RunView([ChatMessage(source="w", content="more")], count=7)) is None
    assert mention.check(RunView([old], count=8)) == "w mentioned 'DONE'"


def test_max_messages_counts_chat_messages_unless_told_to_count_events_too() -> None:
    text = ChatMessage(source="w", content="hi")
    call = ChatMessage(source="w", content="[]", kind="tool_call")
    result = ChatMessage(source="w", content="42", kind="tool_result", tool_name="t")
    chat, everything = (
        MaxMessages(max_messages=3),
        MaxMessages(max_messages=3, include_agent_event=True),
    )
    memo: dict[str, str] = {}
    assert chat.check(RunView([text, call, result], count=3, memo=memo)) is None
    assert chat.check(RunView([text], count=4, memo=memo)) is None
    assert chat.check(RunView([text], count=5, memo=memo)) == "maximum of 3 messages reached"
    assert everything.check(RunView([text, call, result], count=3)) is not None


def test_all_of_remembers_which_side_fired_in_an_earlier_check() -> None:
    both = TextMention(text="A") & TextMention(text="B")
    memo: dict[str, str] = {}
    first = RunView([ChatMessage(source="x", content="A")], count=2, memo=memo)
    assert both.check(first) is None and memo == {".0!fired": "x mentioned 'A'"}
    second = RunView([ChatMessage(source="y", content="B")], count=3, memo=memo)
    assert both.check(second) == "x mentioned 'A'; y mentioned 'B'"


def test_a_misspelt_argument_is_refused_naming_the_right_one() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(
        ValidationError, match="no argument 'max_total_tokn'; did you mean 'max_total_tokens'"
    ):
        TokenUsage(max_total_tokn=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="no argument 'text_mention'"):
        TextMention(text_mention="x")  # type: ignore[call-arg]
    # AutoGen's spellings are aliases
    assert TokenUsage(max_total_token=10) == TokenUsage(max_total_tokens=10)  # type: ignore[call-arg]
    assert MaxMessages(max_messages=3, include_agent_event=True).include_agent_event


async def test_max_messages_stops_a_team_that_would_go_on(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["1", "2", "3"]))
    b = Assistant("b", model=ReplayClient(["x", "y"]))
    info, messages = await harness.run(
        RoundRobinTeam("mm", [a, b], termination=MaxMessages(max_messages=4)), "go"
    )
    assert speakers(messages) == ["user", "a", "b", "a"]
    assert info.status == "completed" and info.stop_reason == "maximum of 4 messages reached"


async def test_token_usage_stops_once_the_limit_is_reached(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["one two three four", "five six seven eight"]))
    info, messages = await harness.run(
        RoundRobinTeam("tok", [a], termination=TokenUsage(max_completion_tokens=6)), "go"
    )
    assert speakers(messages) == ["user", "a", "a"]
    assert info.stop_reason == "completion token usage 8 reached the limit of 6"


async def test_source_match_stops_when_the_source_speaks(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["draft"]))
    b = Assistant("b", model=ReplayClient(["final"]))
    info, messages = await harness.run(
        RoundRobinTeam("src", [a, b], termination=SourceMatch(sources=["b"])), "go"
    )
    assert speakers(messages) == ["user", "a", "b"]
    assert info.result == "final" and info.stop_reason == "b answered"


async def test_function_call_stops_after_the_tool_ran(harness: Harness) -> None:
    tool_call = ToolCall(id="c", name="echo", arguments=json.dumps({"n": 7}))
    a = Assistant(
        "a", model=ReplayClient(["thinking", ModelResult(tool_calls=(tool_call,))]), tools=[echo]
    )
    info, messages = await harness.run(
        RoundRobinTeam("fn", [a], termination=FunctionCall(function_name="echo")), "go"
    )
    assert [m.kind for m in messages] == ["text", "text", "tool_call", "tool_result", "text"]
    assert info.stop_reason == "function echo was called" and info.result == "echo 7"


async def test_all_of_waits_for_every_condition(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["DONE", "more", "more"]))
    stop = TextMention(text="DONE") & MaxMessages(max_messages=4)
    info, messages = await harness.run(RoundRobinTeam("and", [a], termination=stop), "go")
    assert speakers(messages) == ["user", "a", "a", "a"]
    assert info.stop_reason == "a mentioned 'DONE'; maximum of 4 messages reached"


async def test_timeout_is_a_durable_timer_that_ends_a_waiting_team(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["question?"]))
    team = RoundRobinTeam("slow", [a, UserProxy("human")], termination=Timeout(seconds=0.2))
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, "go")
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).status == "awaiting_input"
    await harness.runtime.run_until_idle(include_timers=True)
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.stop_reason == "timed out after 0.2 s"
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a"]


async def test_external_stop_ends_the_run_after_the_current_turn(harness: Harness) -> None:
    a = Assistant("a", model=ReplayClient(["one", "two"]))
    team = RoundRobinTeam("ext", [a, UserProxy("human")], termination=External())
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, "go")
    await harness.runtime.run_until_idle()
    await harness.tasks.stop(task_id)
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).status == "awaiting_input"
    await harness.tasks.give_input(task_id, "thanks")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.stop_reason == "stopped externally"
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a", "human"]
