"""AutoGen AgentChat 0.7 parity: the scenarios of AutoGen's own tests, run on Cadre's teams
with the replay model.

Each test names the AutoGen test it comes from (``python/packages/autogen-agentchat/tests/``
in microsoft/autogen). AutoGen's ``team.run()`` again is `Tasks.continue_task`, its
``team.reset()`` a new task. Where Cadre differs on purpose the docstring says so, and the
test asserts Cadre's behaviour (docs/teams.md, "AutoGen → Cadre", lists every difference).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from pydantic import ValidationError

from cadre import Agent, LocalRuntime, Registry, handler
from cadre.context import Context
from cadre.errors import TaskFailed, TaskStateError
from cadre.models import ModelResult, ReplayClient, ToolCall, Usage
from cadre.teams import (
    Assistant,
    ChatMessage,
    External,
    FunctionalTermination,
    FunctionCall,
    Handoff,
    MaxMessages,
    Participant,
    RequestTurn,
    RoundRobinTeam,
    RunView,
    SelectorTeam,
    SourceMatch,
    StopMessage,
    SwarmTeam,
    TaskInfo,
    Tasks,
    TeamState,
    TerminationCondition,
    TextMention,
    TextMessage,
    Timeout,
    TokenUsage,
    Transfer,
    TurnResult,
    UserProxy,
)
from cadre.teams.termination import condition_adapter

from .conftest import Harness, speakers

# --- helpers ------------------------------------------------------------------------------


def text(source: str, content: str = "Hello", kind: str = "text", **extra: object) -> ChatMessage:
    """A transcript message (AutoGen's TextMessage, StopMessage, HandoffMessage, ...)."""
    return ChatMessage(source=source, content=content, kind=kind, **extra)  # type: ignore[arg-type]


def check(condition: TerminationCondition, *messages: ChatMessage, **view: object) -> str | None:
    """One check of `condition` on `messages`, fresh (AutoGen: a call after ``reset()``)."""
    return condition.check(RunView(list(messages), count=len(messages), **view))  # type: ignore[arg-type]


def talker(name: str, lines: int = 12) -> Assistant:
    """An assistant that answers ``<name> 1``, ``<name> 2``, ... (AutoGen's _EchoAgent)."""
    return Assistant(name, model=ReplayClient([f"{name} {i}" for i in range(1, lines + 1)]))


def scripted(name: str, *answers: str | ModelResult, **kwargs: object) -> Assistant:
    """An assistant on a replay model with these answers."""
    return Assistant(name, model=ReplayClient(list(answers)), **kwargs)  # type: ignore[arg-type]


def transfer(tool: str, call_id: str = "h") -> ModelResult:
    """The model calls hand-off tool `tool`."""
    return ModelResult(tool_calls=(ToolCall(id=call_id, name=tool),), finish_reason="tool_calls")


def hand_to(target: str) -> ModelResult:
    """The model hands off to `target` with the default tool (``transfer_to_<target>``)."""
    return transfer(f"transfer_to_{target}", f"h-{target}")


def hander(name: str, target: str, times: int = 6) -> Assistant:
    """AutoGen's _HandOffAgent: always hands off to `target`."""
    return Assistant(name, model=ReplayClient([hand_to(target)] * times), handoffs=[target])


def pick(name: str) -> str:
    """A selector model's answer naming `name`."""
    return json.dumps({"speaker": name})


def chat(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    """(source, kind) of the chat messages (AutoGen's BaseChatMessage: no tool events)."""
    return [(m.source, m.kind) for m in messages if m.kind in ("text", "handoff", "stop", "error")]


async def start(
    harness: Harness, team: RoundRobinTeam | SelectorTeam | SwarmTeam, task: str
) -> str:
    """Register `team`, submit `task` and run until idle; the task id."""
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, task)
    await harness.runtime.run_until_idle()
    return task_id


async def resume(
    harness: Harness, task_id: str, text: str | None = None
) -> tuple[TaskInfo, list[ChatMessage]]:
    """AutoGen's ``team.run(task=text)`` again: continue the task, run until idle; its
    status and the messages this run added."""
    before = (await harness.tasks.status(task_id)).messages
    await harness.tasks.continue_task(task_id, text)
    await harness.runtime.run_until_idle()
    return await harness.tasks.status(task_id), await harness.tasks.messages(task_id, after=before)


class Stopper(Agent):
    """AutoGen's _StopAgent: answers with a stop message."""

    @handler
    async def turn(self, msg: RequestTurn, ctx: Context) -> TurnResult:
        """Say TERMINATE as a stop message."""
        stop = ChatMessage(source=msg.participant, content="TERMINATE", kind="stop")
        return TurnResult(turn=msg.turn, messages=[stop])


class CountingChecks(TerminationCondition):
    """A condition of one's own (AutoGen's _FlakyTermination shape): fires on its n-th check,
    counting in the run's memo."""

    kind: Literal["parity_counting_checks"] = "parity_counting_checks"
    fire_on: int

    def _check(self, run: RunView, path: str) -> str | None:
        key = f"{path}#checks"
        run.memo[key] = str(int(run.memo.get(key, "0")) + 1)
        return f"check {run.memo[key]}" if int(run.memo[key]) >= self.fire_on else None


def last_says_stop(messages: Sequence[ChatMessage]) -> bool:
    """AutoGen's async_termination_func: the newest message is a text saying exactly stop."""
    return messages[-1].kind == "text" and messages[-1].content == "stop"


def echo(n: int) -> str:
    """Echo a number."""
    return f"echo {n}"


def tool1() -> str:
    """Tool one."""
    return "tool1"


def tool2() -> str:
    """Tool two."""
    return "tool2"


# --- termination conditions, alone (test_termination_condition.py) ------------------------


def test_handoff_termination_fires_only_on_a_hand_off_to_its_target() -> None:
    """AutoGen: test_termination_condition.py::test_handoff_termination."""
    condition = Handoff(target="target")
    assert check(condition) is None
    assert check(condition, text("user")) is None
    assert check(condition, text("user", kind="handoff", handoff="target")) is not None
    assert check(condition, text("user", kind="handoff", handoff="another")) is None
    assert check(condition, text("user"), text("user", kind="handoff", handoff="target"))


def test_stop_message_termination_fires_on_a_stop_message_only() -> None:
    """AutoGen: test_termination_condition.py::test_stop_message_termination."""
    condition = StopMessage()
    assert check(condition) is None
    assert check(condition, text("user")) is None
    assert check(condition, text("user", "Stop", kind="stop")) == "user stopped the run: Stop"
    assert check(condition, text("user"), text("agent", "World")) is None
    assert check(condition, text("user"), text("user", "Stop", kind="stop")) is not None


def test_text_message_termination_fires_on_a_text_message_from_its_source() -> None:
    """AutoGen: test_termination_condition.py::test_text_message_termination."""
    assert check(TextMessage()) is None
    assert check(TextMessage(), text("user", kind="stop")) is None
    assert check(TextMessage(), text("user")) == "text message from user"
    assert check(TextMessage(), text("user", kind="stop"), text("agent", "World")) is not None
    assert check(TextMessage(source="user"), text("user")) is not None
    assert check(TextMessage(source="agent"), text("user")) is None
    assert check(TextMessage(source="agent"), text("agent")) == "text message from agent"


def test_max_message_termination_counts_chat_messages_unless_events_are_included() -> None:
    """AutoGen: test_termination_condition.py::test_max_message_termination."""
    assert check(MaxMessages(max_messages=2)) is None
    assert check(MaxMessages(max_messages=2), text("user")) is None
    assert check(MaxMessages(max_messages=2), text("user"), text("agent", "World")) is not None
    event = text("agent", "[]", kind="tool_call")
    assert check(MaxMessages(max_messages=2), text("user"), event) is None
    with_events = MaxMessages(max_messages=2, include_agent_event=True)
    assert check(with_events, text("user"), event) == "maximum of 2 messages reached"


def test_text_mention_termination_fires_on_the_text_from_its_sources() -> None:
    """AutoGen: test_termination_condition.py::test_mention_termination."""
    condition = TextMention(text="stop")
    assert check(condition) is None
    assert check(condition, text("user")) is None
    assert check(condition, text("user", "stop")) is not None
    assert check(condition, text("user"), text("user", "stop")) is not None
    only_agent = TextMention(text="stop", sources=["agent"])
    assert check(only_agent, text("user", "stop")) is None
    assert (
        check(only_agent, text("user", "stop"), text("agent", "stop")) == "agent mentioned 'stop'"
    )


def test_token_usage_termination_fires_at_the_limit_of_the_runs_usage() -> None:
    """AutoGen: test_termination_condition.py::test_token_usage_termination (Cadre reads the
    run's usage from `RunView.usage`, summed by the manager, not from each message)."""
    condition = TokenUsage(max_total_token=10)  # type: ignore[call-arg]  # AutoGen's spelling
    assert check(condition) is None
    assert check(condition, usage=Usage(prompt_tokens=10, completion_tokens=10)) is not None
    assert check(condition, usage=Usage(prompt_tokens=2, completion_tokens=2)) is None
    assert check(condition, usage=Usage(prompt_tokens=5, completion_tokens=5)) == (
        "total token usage 10 reached the limit of 10"
    )


def test_and_termination_fires_when_both_have_fired() -> None:
    """AutoGen: test_termination_condition.py::test_and_termination."""
    both = MaxMessages(max_messages=2) & TextMention(text="stop")
    assert check(both) is None
    assert check(both, text("user")) is None
    assert check(both, text("user"), text("agent", "World")) is None
    assert check(both, text("user"), text("user", "stop")) is not None


def test_or_termination_fires_when_either_fires() -> None:
    """AutoGen: test_termination_condition.py::test_or_termination."""
    either = MaxMessages(max_messages=3) | TextMention(text="stop")
    assert check(either) is None
    assert check(either, text("user")) is None
    assert check(either, text("user"), text("agent", "World")) is None
    assert check(either, text("user"), text("user", "stop")) is not None
    assert check(either, text("user"), text("user")) is None
    assert check(either, text("user"), text("user"), text("user")) is not None
    assert check(either, text("user"), text("user"), text("user", "stop")) is not None


def test_external_termination_fires_once_stop_was_requested() -> None:
    """AutoGen: test_termination_condition.py::test_external_termination."""
    assert check(External()) is None
    assert check(External(), stop_requested=True) == "stopped externally"


def test_source_match_termination_fires_when_a_source_speaks() -> None:
    """AutoGen: test_termination_condition.py::test_source_match_termination."""
    condition = SourceMatch(sources=["Assistant"])
    assert check(condition) is None
    assert check(condition, text("agent"), text("user")) is None
    assert check(condition, text("agent"), text("Assistant"), text("user")) == "Assistant answered"


def test_function_call_termination_fires_on_a_result_of_that_function() -> None:
    """AutoGen: test_termination_condition.py::test_function_call_termination."""
    condition = FunctionCall(function_name="test_function")
    assert check(condition) is None
    assert check(condition, text("user")) is None
    result = text("assistant", "", kind="tool_result", tool_name="test_function")
    other = text("assistant", "", kind="tool_result", tool_name="another_function")
    assert check(condition, text("user"), result) == "function test_function was called"
    assert check(condition, text("user"), other) is None


def test_functional_termination_calls_the_function_with_the_new_messages() -> None:
    """AutoGen: test_termination_condition.py::test_functional_termination (the function is
    stored by its qualified name, so a stored team finds it again)."""
    condition = FunctionalTermination(function=last_says_stop)  # type: ignore[arg-type]
    assert condition.function.endswith("test_autogen_parity.last_says_stop")
    assert check(condition) is None  # not called without new messages
    assert check(condition, text("user")) is None
    assert check(condition, text("user", "stop")) is not None
    restored = condition_adapter.validate_json(condition.model_dump_json())
    assert check(restored, text("user", "stop")) is not None


async def async_says_stop(messages: Sequence[ChatMessage]) -> bool:
    """AutoGen's async termination function (accepted by AutoGen, not by Cadre)."""
    return False


def test_functional_termination_refuses_async_functions_and_lambdas() -> None:
    """AutoGen: test_termination_condition.py::test_functional_termination (async_termination_func).
    Differs on purpose: checks are synchronous, and a stored condition finds its function
    by its module-level name, so an async function (which would fire at once) and a lambda
    or local function (whose name others share) are refused at construction."""
    with pytest.raises(ValidationError, match="must be synchronous"):
        FunctionalTermination(function=async_says_stop)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not a module-level function"):
        FunctionalTermination(function=lambda messages: True)  # type: ignore[arg-type]


def test_a_misspelt_condition_argument_names_the_closest_one() -> None:
    """AutoGen: test_termination_condition.py (constructors); AutoGen raises a TypeError for an
    unknown keyword, Cadre a pydantic ValidationError that names the argument meant."""
    with pytest.raises(ValidationError, match="no argument 'source'; did you mean 'sources'"):
        TextMention(text="stop", source=["agent"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="did you mean 'max_messages'"):
        MaxMessages(max_message=3)  # type: ignore[call-arg]


# --- termination conditions in a team ------------------------------------------------------


async def test_a_text_mention_in_the_task_ends_the_run_before_anyone_speaks(
    harness: Harness,
) -> None:
    """AutoGen: test_termination_condition.py::test_mention_termination (the task is checked
    first, as AutoGen's group chat manager checks the task messages)."""
    team = RoundRobinTeam("mention", [talker("a")], termination=TextMention(text="STOP"))
    info, messages = await harness.run(team, "STOP now")
    assert speakers(messages) == ["user"]
    assert info.status == "completed" and info.stop_reason == "user mentioned 'STOP'"


async def test_max_messages_of_one_stops_at_the_task_and_counts_afresh_on_continue(
    harness: Harness,
) -> None:
    """AutoGen: test_termination_condition.py::test_max_message_termination, in a team (checked
    against autogen-agentchat 0.7.5: the task alone is one message; run() again lets one
    agent speak)."""
    team = RoundRobinTeam(
        "one", [talker("a"), talker("b")], termination=MaxMessages(max_messages=1)
    )
    task_id = await start(harness, team, "x")
    assert speakers(await harness.tasks.messages(task_id)) == ["user"]
    info, new = await resume(harness, task_id, "y")
    assert speakers(new) == ["user"] and info.stop_reason == "maximum of 1 messages reached"
    info, new = await resume(harness, task_id)
    assert speakers(new) == ["a"] and info.status == "completed"


async def test_max_messages_with_agent_events_counts_tool_calls_and_results(
    harness: Harness,
) -> None:
    """AutoGen: test_termination_condition.py::test_max_message_termination
    (include_agent_event=True) and test_group_chat.py::test_round_robin_group_chat_with_tools."""
    call = ModelResult(tool_calls=(ToolCall(id="c", name="echo", arguments='{"n": 1}'),))
    tools = scripted("tools", call, call, tools=[echo])
    events = MaxMessages(max_messages=3, include_agent_event=True)
    info, messages = await harness.run(RoundRobinTeam("ev", [tools], termination=events), "go")
    # a turn's messages are checked together, as AutoGen checks an agent's whole response:
    # the limit is passed (4 of 3) rather than cut inside the turn
    assert [m.kind for m in messages] == ["text", "tool_call", "tool_result", "text"]
    assert info.stop_reason == "maximum of 3 messages reached"


async def test_stop_message_termination_stops_on_a_participants_stop_message(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat (_StopAgent) with
    StopMessageTermination."""
    harness.registry.register(Stopper, type="parity.stopper")
    team = RoundRobinTeam(
        "stopping",
        [talker("a"), Participant("stopper", "parity.stopper")],
        termination=StopMessage(),
    )
    info, messages = await harness.run(team, "go")
    assert chat(messages) == [("user", "text"), ("a", "text"), ("stopper", "stop")]
    assert info.stop_reason == "stopper stopped the run: TERMINATE"
    assert info.result == "a 1"  # the last text message; a stop message is not a result


async def test_text_message_termination_with_a_source_waits_for_that_source(
    harness: Harness,
) -> None:
    """AutoGen: test_termination_condition.py::test_text_message_termination (source=agent)."""
    team = RoundRobinTeam("texts", [talker("a"), talker("b")], termination=TextMessage(source="b"))
    info, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "a", "b"]
    assert info.stop_reason == "text message from b"


async def test_source_match_includes_the_task_message(harness: Harness) -> None:
    """AutoGen: test_termination_condition.py::test_source_match_termination (the task is a
    message from ``user``, so a condition on ``user`` fires before anyone speaks)."""
    team = RoundRobinTeam("src", [talker("a")], termination=SourceMatch(sources=["user"]))
    info, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user"] and info.stop_reason == "user answered"


async def test_function_call_termination_fires_on_a_failed_call_too(harness: Harness) -> None:
    """AutoGen: test_termination_condition.py::test_function_call_termination (AutoGen checks
    the execution results by name, errors included)."""
    bad = ModelResult(tool_calls=(ToolCall(id="c", name="echo", arguments='{"n": "x"}'),))
    a = scripted("a", bad, tools=[echo])
    team = RoundRobinTeam("fc", [a], termination=FunctionCall(function_name="echo"))
    info, messages = await harness.run(team, "go")
    [result] = [m for m in messages if m.kind == "tool_result"]
    assert result.is_error and info.stop_reason == "function echo was called"


async def test_functional_termination_stops_a_team(harness: Harness) -> None:
    """AutoGen: test_termination_condition.py::test_functional_termination, in a team."""
    team = RoundRobinTeam(
        "fn",
        [scripted("a", "Hello", "stop", "never")],
        termination=FunctionalTermination(function=last_says_stop),  # type: ignore[arg-type]
    )
    info, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "a", "a"]
    assert info.stop_reason is not None and info.stop_reason.endswith("returned true")


async def test_a_custom_condition_class_is_stored_and_checked_once_per_turn(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::_FlakyTermination (a TerminationCondition subclass): a
    condition of one's own runs in the team, its memo kept between checks."""
    team = RoundRobinTeam("custom", [talker("a")], termination=CountingChecks(fire_on=3))
    info, messages = await harness.run(team, "go")
    # checked after the task, then after each turn: the third check follows the second turn
    assert speakers(messages) == ["user", "a", "a"] and info.stop_reason == "check 3"
    assert condition_adapter.validate_python({"kind": "parity_counting_checks", "fire_on": 2})


async def test_token_usage_counts_the_selectors_model_calls_too(harness: Harness) -> None:
    """AutoGen: test_termination_condition.py::test_token_usage_termination. Differs on
    purpose: AutoGen sums the usage on the messages only; Cadre the run's usage, which
    includes the selector's model calls (they cost as much)."""
    selector = ReplayClient([pick("b")])
    team = SelectorTeam(
        "tok",
        [talker("a"), talker("b")],
        model=selector,
        termination=TokenUsage(max_total_tokens=1),
    )
    info, messages = await harness.run(team, "go")
    # b's message carries tokens too, but the selector's call alone is over the limit
    assert info.usage_by_agent["tok.selector"].total_tokens >= 1
    assert speakers(messages) == ["user", "b"]
    assert info.stop_reason is not None and "token usage" in info.stop_reason


async def test_conditions_start_afresh_when_a_task_continues(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_resume_and_reset (the
    manager resets its condition after each run: counts and what an AND saw)."""
    writer = scripted("a", "APPROVE", "x", "y", "APPROVE")
    both = TextMention(text="APPROVE") & MaxMessages(max_messages=3)
    team = RoundRobinTeam("fresh", [writer, talker("b")], termination=both)
    task_id = await start(harness, team, "go")
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a", "b"]
    # the next run counts from zero, and its AND waits for a new APPROVE
    info, new = await resume(harness, task_id)
    assert speakers(new) == ["a", "b", "a", "b", "a"]
    assert info.stop_reason == "a mentioned 'APPROVE'; maximum of 3 messages reached"


async def test_external_termination_is_reset_for_the_next_run(harness: Harness) -> None:
    """AutoGen: test_termination_condition.py::test_external_termination (reset)."""
    team = RoundRobinTeam(
        "ext", [talker("a"), UserProxy("human")], termination=External() | TextMention(text="a 3")
    )
    task_id = await start(harness, team, "go")
    await harness.tasks.stop(task_id)
    await harness.tasks.give_input(task_id, "ok")
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).stop_reason == "stopped externally"
    info, _ = await resume(harness, task_id)
    assert (info.status, info.speaker) == ("awaiting_input", "human")  # not stopped again
    await harness.tasks.give_input(task_id, "more")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert info.stop_reason == "a mentioned 'a 3'"


async def test_timeout_fires_while_waiting_for_a_human_and_again_in_a_continued_run(
    harness: Harness,
) -> None:
    """AutoGen: test_termination_condition.py::test_timeout_termination. Differs on purpose:
    AutoGen's timer is checked only when a message arrives, so a team waiting for a human
    never times out; Cadre's is a durable timer that ends the run while it waits. Each run
    gets its own timer."""
    team = RoundRobinTeam(
        "slow", [talker("a"), UserProxy("human")], termination=Timeout(seconds=0.05)
    )
    task_id = await start(harness, team, "go")
    await harness.runtime.run_until_idle(include_timers=True)
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.stop_reason == "timed out after 0.05 s"
    await harness.tasks.continue_task(task_id, "again")
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).status == "awaiting_input"
    await harness.runtime.run_until_idle(include_timers=True)
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.stop_reason == "timed out after 0.05 s"
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a", "user", "a"]


# --- round-robin (test_group_chat.py) -------------------------------------------------------


async def test_round_robin_speaks_in_order_until_the_text_mention(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat."""
    coder = scripted("coding_assistant", "Here is the program", "TERMINATE")
    runner = scripted("code_executor", "Hello, world!")
    team = RoundRobinTeam(
        "rr", [coder, runner], termination_condition=TextMention(text="TERMINATE")
    )
    info, messages = await harness.run(team, "Write a program that prints 'Hello, world!'")
    assert [m.content for m in messages] == [
        "Write a program that prints 'Hello, world!'",
        "Here is the program",
        "Hello, world!",
        "TERMINATE",
    ]
    assert info.stop_reason == "coding_assistant mentioned 'TERMINATE'"


async def test_round_robin_tool_turn_is_call_result_and_summary(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_tools (8 messages: task,
    call, execution, summary, then text turns)."""
    call = ModelResult(tool_calls=(ToolCall(id="1", name="echo", arguments='{"n": 1}'),))
    tool_user = scripted("tool_use_agent", call, "Hello", "TERMINATE", tools=[echo])
    team = RoundRobinTeam(
        "tools", [tool_user, talker("echo_agent")], termination=TextMention(text="TERMINATE")
    )
    info, messages = await harness.run(team, "go")
    assert [(m.source, m.kind) for m in messages] == [
        ("user", "text"),
        ("tool_use_agent", "tool_call"),
        ("tool_use_agent", "tool_result"),
        ("tool_use_agent", "text"),
        ("echo_agent", "text"),
        ("tool_use_agent", "text"),
        ("echo_agent", "text"),
        ("tool_use_agent", "text"),
    ]
    assert messages[3].content == "echo 1" and info.result == "TERMINATE"


async def test_round_robin_resumes_with_the_next_speaker_after_termination(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_resume_and_reset."""
    names = ["agent_1", "agent_2", "agent_3", "agent_4"]
    team = RoundRobinTeam(
        "resume", [talker(n) for n in names], termination=MaxMessages(max_messages=3)
    )
    task_id = await start(harness, team, "Write a program")
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "agent_1", "agent_2"]
    info, new = await resume(harness, task_id)
    assert speakers(new) == ["agent_3", "agent_4", "agent_1"]
    assert info.status == "completed" and info.messages == 6


async def test_a_new_task_starts_again_from_the_first_speaker(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_resume_and_reset
    (``team.reset()`` then ``run(task=...)``: in Cadre, a new task)."""
    team = RoundRobinTeam(
        "reset",
        [talker("agent_1"), talker("agent_2"), talker("agent_3")],
        termination=MaxMessages(max_messages=3),
    )
    first = await start(harness, team, "Write a program")
    second = await harness.tasks.submit(team, "Write a program")
    await harness.runtime.run_until_idle()
    for task_id in (first, second):
        assert speakers(await harness.tasks.messages(task_id)) == ["user", "agent_1", "agent_2"]


async def test_round_robin_resumes_after_max_turns_with_the_next_speaker(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_max_turn."""
    names = ["agent_1", "agent_2", "agent_3", "agent_4"]
    team = RoundRobinTeam("turns", [talker(n) for n in names], max_turns=3)
    task_id = await start(harness, team, "Write a program")
    info = await harness.tasks.status(task_id)
    assert speakers(await harness.tasks.messages(task_id)) == ["user", *names[:3]]
    assert info.stop_reason == "maximum of 3 turns reached"
    info, new = await resume(harness, task_id)
    assert speakers(new) == ["agent_4", "agent_1", "agent_2"]
    assert info.stop_reason == "maximum of 3 turns reached"


async def test_continuing_with_text_adds_the_users_message_then_goes_on(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_pause_and_resume (``run(task="new task")``),
    for round-robin: the text is the user's next message; the order goes on."""
    team = RoundRobinTeam("more", [talker("a"), talker("b")], max_turns=1)
    task_id = await start(harness, team, "task")
    info, new = await resume(harness, task_id, "new task")
    assert [(m.source, m.content) for m in new] == [("user", "new task"), ("b", "b 1")]
    assert info.stop_reason == "maximum of 1 turn reached"
    b_model: ReplayClient = team.participants["b"].model  # type: ignore[attr-defined]
    assert [m.content for m in b_model.calls[0][1:]] == ["task", "a 1", "new task"]


async def test_a_failing_agent_fails_the_task_and_it_can_continue(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_exception_raised_from_agent.
    Differs on purpose: AutoGen's run() raises; Cadre's task ends ``failed`` with the reason
    (`Tasks.wait` raises `TaskFailed`), and the task can be continued after a fix."""
    flaky = scripted("agent_2")
    flaky.model.responses += [RuntimeError("I am a flaky agent..."), "agent_2 is back"]  # type: ignore[attr-defined]
    team = RoundRobinTeam(
        "flaky",
        [talker("agent_1"), flaky, talker("agent_3")],
        termination=MaxMessages(max_messages=3),
    )
    task_id = await start(harness, team, "go")
    with pytest.raises(TaskFailed, match="agent_2: model call failed: RuntimeError: I am a flaky"):
        await harness.tasks.wait(task_id)
    info, new = await resume(harness, task_id)  # the order goes on after the failed turn
    assert [(m.source, m.content) for m in new] == [
        ("agent_3", "agent_3 1"),
        ("agent_1", "agent_1 2"),
        ("agent_2", "agent_2 is back"),
    ]
    assert info.status == "completed" and info.stop_reason == "maximum of 3 messages reached"


async def test_cancel_then_continue_goes_on_after_the_cancelled_turn(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_cancellation (checked against
    autogen-agentchat 0.7.5: the turn under way is dropped and run() goes on with the speaker
    after it)."""
    team = RoundRobinTeam(
        "cancel", [talker("agent_1"), UserProxy("human"), talker("agent_3")], max_turns=1000
    )
    task_id = await start(harness, team, "go")
    assert (await harness.tasks.status(task_id)).status == "awaiting_input"
    await harness.tasks.cancel(task_id)
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).status == "cancelled"
    await harness.tasks.continue_task(task_id)
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert (info.status, info.speaker) == ("awaiting_input", "human")
    transcript = await harness.tasks.messages(task_id)
    assert speakers(transcript) == ["user", "agent_1", "agent_3", "agent_1"]


async def test_wait_returns_the_finished_task(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat (``await team.run()`` returns
    the TaskResult); Cadre: `Tasks.wait` returns the TaskInfo once the task has finished."""
    team = RoundRobinTeam("waits", [talker("a")], termination=MaxMessages(max_messages=2))
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, "go")
    info = await harness.tasks.wait(task_id)
    assert (info.status, info.result, info.messages) == ("completed", "a 1", 2)


async def test_a_running_task_cannot_be_continued_and_a_task_id_cannot_be_reused(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py (a team raises when run while running). Cadre:
    `TaskStateError` for continue_task on an unfinished task, and for submit on a used id."""
    team = RoundRobinTeam(
        "busy", [talker("a"), UserProxy("human")], termination=MaxMessages(max_messages=9)
    )
    task_id = await start(harness, team, "go")
    with pytest.raises(TaskStateError, match="awaiting_input"):
        await harness.tasks.continue_task(task_id)
    with pytest.raises(TaskStateError, match="exists already"):
        await harness.tasks.submit(team, "again", task_id=task_id)
    info = await harness.tasks.wait(task_id)  # returns when awaiting input
    assert info.status == "awaiting_input"


# --- selector (test_group_chat.py) ----------------------------------------------------------


async def test_selector_model_picks_each_speaker(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat."""
    harness.registry.register(Stopper, type="parity.stopper")
    selector = ReplayClient(["agent3", "agent2", "agent1", "agent2", "agent1"])
    agent1 = Participant("agent1", "parity.stopper", description="echo agent 1")
    team = SelectorTeam(
        "sel",
        [agent1, talker("agent2"), talker("agent3")],
        model_client=selector,
        termination_condition=TextMention(text="TERMINATE") | StopMessage(),
    )
    info, messages = await harness.run(team, "Write a program")
    assert [m.source for m in messages] == ["user", "agent3", "agent2", "agent1"]
    assert info.stop_reason == "agent1 mentioned 'TERMINATE'"
    assert "agent1: echo agent 1" in selector.calls[0][0].content


async def test_selector_with_two_speakers_alternates_without_asking_the_model(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_two_speakers (after the first
    pick, the only candidate who is not the previous speaker speaks)."""
    selector = ReplayClient(["agent2"])
    agent1 = scripted("agent1", "agent1 1", "TERMINATE")
    team = SelectorTeam(
        "two", [agent1, talker("agent2")], model=selector, termination=TextMention(text="TERMINATE")
    )
    info, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "agent2", "agent1", "agent2", "agent1"]
    assert len(selector.calls) == 1 and info.result == "TERMINATE"


async def test_selector_lets_a_speaker_repeat_when_allowed(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_two_speakers_allow_repeated."""
    selector = ReplayClient(["agent2", "agent2", "agent1"])
    team = SelectorTeam(
        "repeat",
        [scripted("agent1", "TERMINATE"), talker("agent2")],
        model=selector,
        allow_repeated_speaker=True,
        termination=TextMention(text="TERMINATE"),
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "agent2", "agent2", "agent1"]


async def test_selector_accepts_a_single_name_on_the_second_attempt(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_succcess_after_2_attempts."""
    selector = ReplayClient(["agent2, agent3", "agent2"])
    team = SelectorTeam(
        "second",
        [talker("agent1"), talker("agent2"), talker("agent3")],
        model=selector,
        max_turns=1,
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "agent2"]
    assert len(selector.calls) == 2 and "not one of" in selector.calls[1][-1].content


async def test_selector_falls_back_to_the_first_candidate_after_three_attempts(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_fall_back_to_first_after_3_attempts."""
    selector = ReplayClient(["agent2, agent3", "agent5", "agent3, agent1"])
    team = SelectorTeam(
        "first", [talker("agent1"), talker("agent2"), talker("agent3")], model=selector, max_turns=1
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "agent1"] and len(selector.calls) == 3


async def test_selector_falls_back_to_the_previous_speaker_after_three_attempts(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_fall_back_to_previous_after_3_attempts
    (the model keeps naming the previous speaker, who may not repeat; after three attempts
    the previous speaker speaks anyway)."""
    selector = ReplayClient(["agent2"] * 4)
    team = SelectorTeam(
        "previous",
        [talker("agent1"), talker("agent2"), talker("agent3")],
        model=selector,
        max_turns=2,
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "agent2", "agent2"] and len(selector.calls) == 4


async def test_selector_func_overrides_the_model_and_none_leaves_it_to_the_model(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_selector (Cadre's function
    gets the team's stored state; its ``recent`` window holds the newest messages)."""

    def select(state: TeamState) -> str | None:
        last = state.recent[-1].source
        return {"user": "agent1", "agent1": "agent2", "agent2": None, "agent3": "agent4"}.get(
            last, "agent1"
        )

    selector = ReplayClient(["agent3"])
    names = ["agent1", "agent2", "agent3", "agent4"]
    team = SelectorTeam(
        "func",
        [talker(n) for n in names],
        model=selector,
        selector_func=select,
        termination=MaxMessages(max_messages=6),
    )
    info, messages = await harness.run(team, "task")
    assert speakers(messages) == ["user", "agent1", "agent2", "agent3", "agent4", "agent1"]
    assert len(selector.calls) == 1 and info.stop_reason == "maximum of 6 messages reached"


async def test_a_selector_funcs_pick_counts_as_the_previous_speaker(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_selector. Differs on
    purpose: AutoGen's previous speaker is only what its model (or a candidate list) chose,
    so after a selector_func pick the model may choose the same agent again; in Cadre the
    previous speaker is whoever spoke last, and without allow_repeated_speaker the model is
    not offered it."""
    selector = ReplayClient([pick("b")])
    team = SelectorTeam(
        "prev",
        [talker("a"), talker("b"), talker("c")],
        model=selector,
        selector_func=lambda state: "a" if state.messages == 1 else None,
        termination=MaxMessages(max_messages=3),
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "a", "b"]
    offered = selector.calls[0][0].content.split("select the next role from")[1]
    assert "'a'" not in offered and "'b'" in offered and "'c'" in offered


async def test_candidate_func_narrows_who_may_speak(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_candidate_func. Differs on
    purpose in one case: a candidate list that holds the previous speaker and one other asks
    AutoGen's model (which may not pick the previous speaker); Cadre drops the previous
    speaker from the list first, so the other speaks without a model call."""

    def candidates(state: TeamState) -> list[str]:
        last = state.recent[-1].source
        return {
            "user": ["agent1"],
            "agent1": ["agent2"],
            "agent2": ["agent2", "agent3"],
            "agent3": ["agent4"],
        }.get(last, ["agent1"])

    selector = ReplayClient(["agent3"])
    names = ["agent1", "agent2", "agent3", "agent4"]
    team = SelectorTeam(
        "cands",
        [talker(n) for n in names],
        model=selector,
        candidate_func=candidates,
        termination=MaxMessages(max_messages=6),
    )
    _, messages = await harness.run(team, "task")
    assert speakers(messages) == ["user", "agent1", "agent2", "agent3", "agent4", "agent1"]
    assert selector.calls == []


async def test_a_selector_func_naming_a_stranger_fails_the_task(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_selector (AutoGen raises
    ValueError "Selector function returned an invalid speaker name"). Cadre fails the task
    with that reason; it does not wait forever."""
    team = SelectorTeam(
        "stranger",
        [talker("a"), talker("b")],
        model=ReplayClient([]),
        selector_func=lambda s: "zed",
    )
    info, messages = await harness.run(team, "go")
    assert info.status == "failed" and speakers(messages) == ["user"]
    assert "selector_func of team 'stranger' named 'zed'" in (info.stop_reason or "")
    with pytest.raises(TaskFailed, match="selecting the next speaker failed"):
        await harness.tasks.wait(info.task_id)


async def test_a_failing_selector_model_fails_the_task(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_with_exception_raised_from_agent,
    for the selector's own model (AutoGen's run() raises). Cadre fails the task with the
    reason, as for a participant's model, and it can continue once the model answers."""
    selector = ReplayClient([RuntimeError("selector down"), pick("b")])
    team = SelectorTeam("down", [talker("a"), talker("b")], model=selector, max_turns=1)
    info, _ = await harness.run(team, "go")
    assert info.status == "failed"
    assert info.stop_reason == (
        "down: selecting the next speaker failed: RuntimeError: selector down"
    )
    info, new = await resume(harness, info.task_id)
    assert speakers(new) == ["b"] and info.status == "completed"


async def test_the_selector_model_may_pick_only_a_candidate(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_candidate_func. Differs on
    purpose: AutoGen accepts any participant's name in the model's answer, even one the
    candidate function left out; Cadre's answer is a JSON enum of the candidates, and a
    name outside it is retried like nonsense (then the fallback)."""
    selector = ReplayClient(["a", "a", "c"])
    team = SelectorTeam(
        "only",
        [talker("a"), talker("b"), talker("c")],
        model=selector,
        candidate_func=lambda state: ["b", "c"],
        max_turns=1,
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "c"] and len(selector.calls) == 3


async def test_an_empty_or_unknown_candidate_list_means_everyone(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_custom_candidate_func (AutoGen
    raises ValueError for an empty list or an unknown name). Differs: Cadre ignores names
    that are not participants and, when none is left, offers every participant (but the
    previous speaker) instead of failing the run."""
    selector = ReplayClient([pick("b")])
    team = SelectorTeam(
        "anyone",
        [talker("a"), talker("b")],
        model=selector,
        candidates=lambda state: ["ghost"],
        max_turns=1,
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "b"]
    offered = selector.calls[0][0].content.split("select the next role from")[1]
    assert "'a'" in offered and "'b'" in offered and "ghost" not in offered


async def test_a_continued_selector_task_asks_the_model_again(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_state (resume after a run; the
    previous speaker is remembered across runs)."""
    selector = ReplayClient([pick("a"), pick("b"), pick("a"), pick("c")])
    team = SelectorTeam(
        "again", [talker("a"), talker("b"), talker("c")], model=selector, max_turns=2
    )
    task_id = await start(harness, team, "go")
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a", "b"]
    info, new = await resume(harness, task_id, "once more")
    assert speakers(new) == ["user", "a", "c"] and info.stop_reason == "maximum of 2 turns reached"
    offered = selector.calls[2][0].content.split("select the next role from")[1]
    assert "'b'" not in offered  # b spoke last, in the previous run
    assert "once more" in selector.calls[2][0].content


# --- swarm (test_group_chat.py) ------------------------------------------------------------


async def test_swarm_follows_hand_offs_from_the_first_participant(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_handoff (a hand-off is a tool call, its result
    and a hand-off message; only the hand-off message is a chat message, so
    MaxMessages(6) stops after five hand-offs as AutoGen's does)."""
    team = SwarmTeam(
        "swarm",
        [
            hander("second_agent", "third_agent"),
            hander("first_agent", "second_agent"),
            hander("third_agent", "first_agent"),
        ],
        termination=MaxMessages(max_messages=6),
    )
    info, messages = await harness.run(team, "task")
    handoffs = [m for m in messages if m.kind == "handoff"]
    assert [(m.source, m.handoff) for m in handoffs] == [
        ("second_agent", "third_agent"),
        ("third_agent", "first_agent"),
        ("first_agent", "second_agent"),
        ("second_agent", "third_agent"),
        ("third_agent", "first_agent"),
    ]
    assert handoffs[0].content == (
        "Transferred to third_agent, adopting the role of third_agent immediately."
    )
    assert info.stop_reason == "maximum of 6 messages reached"


async def test_swarm_hand_off_with_a_custom_tool_name_and_message(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_handoff_using_tool_calls (AutoGen's Handoff is
    Cadre's Transfer: the message is the tool's result and the hand-off message)."""
    agent1 = scripted(
        "agent1",
        transfer("handoff_to_agent2"),
        "Hello",
        "TERMINATE",
        handoffs=[Transfer(target="agent2", name="handoff_to_agent2", message="handoff to agent2")],
    )
    team = SwarmTeam(
        "custom", [agent1, hander("agent2", "agent1")], termination=TextMention(text="TERMINATE")
    )
    info, messages = await harness.run(team, "task")
    assert [(m.source, m.kind, m.content) for m in messages if m.kind != "tool_call"] == [
        ("user", "text", "task"),
        ("agent1", "tool_result", "handoff to agent2"),
        ("agent1", "handoff", "handoff to agent2"),
        (
            "agent2",
            "tool_result",
            "Transferred to agent1, adopting the role of agent1 immediately.",
        ),
        ("agent2", "handoff", "Transferred to agent1, adopting the role of agent1 immediately."),
        ("agent1", "text", "Hello"),
        ("agent1", "text", "TERMINATE"),
    ]
    assert info.stop_reason == "agent1 mentioned 'TERMINATE'"
    tools = agent1.model.tools_seen[0]  # type: ignore[attr-defined]
    assert [t.name for t in tools] == ["handoff_to_agent2"]


async def test_swarm_resumes_with_the_current_speaker_after_max_turns(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_pause_and_resume."""
    team = SwarmTeam(
        "pause",
        [
            hander("second_agent", "third_agent"),
            hander("first_agent", "second_agent"),
            hander("third_agent", "first_agent"),
        ],
        max_turns=1,
    )
    task_id = await start(harness, team, "task")
    first = await harness.tasks.messages(task_id)
    assert [(m.source, m.handoff) for m in first if m.kind == "handoff"] == [
        ("second_agent", "third_agent")
    ]
    _, new = await resume(harness, task_id, "new task")
    assert chat(new) == [("user", "text"), ("third_agent", "handoff")]
    _, new = await resume(harness, task_id)
    assert chat(new) == [("first_agent", "handoff")] and new[-1].handoff == "second_agent"


async def test_swarm_handoff_termination_then_resume(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_with_handoff_termination (a hand-off to a
    participant)."""
    team = SwarmTeam(
        "stopat",
        [
            hander("second_agent", "third_agent"),
            hander("first_agent", "second_agent"),
            hander("third_agent", "first_agent"),
        ],
        termination=Handoff(target="third_agent"),
    )
    task_id = await start(harness, team, "task")
    assert chat(await harness.tasks.messages(task_id)) == [
        ("user", "text"),
        ("second_agent", "handoff"),
    ]
    _, new = await resume(harness, task_id)
    assert [m.handoff for m in new if m.kind == "handoff"] == [
        "first_agent",
        "second_agent",
        "third_agent",
    ]
    _, new = await resume(harness, task_id, "new task")
    assert chat(new)[0] == ("user", "text")
    assert [m.handoff for m in new if m.kind == "handoff"] == [
        "first_agent",
        "second_agent",
        "third_agent",
    ]


async def test_swarm_hand_off_outside_the_team_keeps_the_agent_that_handed_off(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_swarm_with_handoff_termination (a hand-off to a
    non-existing agent). Differs on purpose: AutoGen refuses to resume (ValueError) unless
    the task is a HandoffMessage to a participant; Cadre goes on with the agent that handed
    off, which gets the user's message."""
    outsider = Assistant(
        "third_agent",
        model=ReplayClient([hand_to("non_existing_agent"), "back again"]),
        handoffs=["first_agent", "non_existing_agent"],
    )
    team = SwarmTeam(
        "outside",
        [hander("second_agent", "third_agent"), hander("first_agent", "second_agent"), outsider],
        termination=Handoff(target="non_existing_agent") | TextMention(text="back"),
    )
    task_id = await start(harness, team, "task")
    assert [m.handoff for m in await harness.tasks.messages(task_id) if m.kind == "handoff"] == [
        "third_agent",
        "non_existing_agent",
    ]
    info, new = await resume(harness, task_id, "new task")
    assert info.stop_reason == "third_agent mentioned 'back'"
    assert [(m.source, m.content) for m in new] == [
        ("user", "new task"),
        ("third_agent", "back again"),
    ]
    assert outsider.model.calls[1][-1].content == "new task"  # type: ignore[attr-defined]


async def test_swarm_hands_off_to_the_user_then_the_users_answer_goes_to_that_agent(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_swarm_with_handoff_termination and the Swarm docs'
    HandoffTermination(target="user") pattern, where the answer is resumed as
    ``run(task=HandoffMessage(source="user", target=<agent>))``. In Cadre the user's text is
    enough: `continue_task` gives it to the agent that handed off."""
    desk = Assistant("desk", model=ReplayClient([hand_to("flights")]), handoffs=["flights"])
    flights = Assistant(
        "flights",
        model=ReplayClient(["Which date?", hand_to("user"), "Booked for Friday. DONE"]),
        handoffs=["desk", "user"],
    )
    team = SwarmTeam(
        "desk",
        [desk, flights],
        termination=Handoff(target="user") | TextMention(text="DONE"),
        max_turns=4,
    )
    task_id = await start(harness, team, "Book a flight")
    info = await harness.tasks.status(task_id)
    assert info.stop_reason == "flights handed off to user"
    info, new = await resume(harness, task_id, "Friday")
    assert [(m.source, m.content) for m in new] == [
        ("user", "Friday"),
        ("flights", "Booked for Friday. DONE"),
    ]
    assert info.status == "completed" and info.result == "Booked for Friday. DONE"


async def test_swarm_parallel_tool_calls_with_a_hand_off_run_every_tool(harness: Harness) -> None:
    """AutoGen: test_group_chat.py::test_swarm_with_parallel_tool_calls. Differs on purpose:
    AutoGen's hand-off message carries the tool calls and results as context for the next
    agent's model; Cadre's next agent is told the chat messages (the task and the hand-off)
    and the tool events stay in the transcript."""
    calls = ModelResult(
        tool_calls=(
            ToolCall(id="1", name="tool1"),
            ToolCall(id="2", name="tool2"),
            ToolCall(id="3", name="handoff_to_agent2"),
        )
    )
    agent1 = scripted(
        "agent1",
        calls,
        tools=[tool1, tool2],
        handoffs=[Transfer(target="agent2", name="handoff_to_agent2", message="handoff to agent2")],
    )
    agent2 = scripted("agent2", "Hello", "TERMINATE")
    team = SwarmTeam("parallel", [agent1, agent2], termination=TextMention(text="TERMINATE"))
    _, messages = await harness.run(team, "task")
    assert [(m.kind, m.content) for m in messages if m.kind == "tool_result"] == [
        ("tool_result", "tool1"),
        ("tool_result", "tool2"),
        ("tool_result", "handoff to agent2"),
    ]
    assert chat(messages) == [
        ("user", "text"),
        ("agent1", "handoff"),
        ("agent2", "text"),
        ("agent2", "text"),
    ]
    told = [m.content for m in agent2.model.calls[0][1:]]  # type: ignore[attr-defined]
    assert told == ["task", "handoff to agent2"]


# --- nested teams (test_group_chat_nested.py) ----------------------------------------------


async def test_an_inner_teams_mention_ends_the_outer_run_when_its_turn_ends(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat_nested.py::test_round_robin_group_chat_nested_teams_run (one
    TextMentionTermination for both teams: the inner TERMINATE is relayed into the outer
    transcript, so the outer team stops after the inner team's turn)."""
    termination = TextMention(text="TERMINATE")
    inner = RoundRobinTeam(
        "inner",
        [
            scripted("assistant", "Here is the program", "TERMINATE"),
            scripted("code_executor", "Hello, world!"),
        ],
        termination=termination,
    )
    reviewer = scripted("reviewer", "Good job", "TERMINATE")
    outer = RoundRobinTeam("outer", [inner, reviewer], termination=termination)
    info, messages = await harness.run(outer, "Write a program")
    assert speakers(messages) == ["user", "assistant", "code_executor", "assistant"]
    assert {m.via for m in messages[1:]} == {"inner"}
    assert info.stop_reason == "assistant mentioned 'TERMINATE'"
    assert reviewer.model.calls == []  # type: ignore[attr-defined]


async def test_outer_conditions_on_inner_names_fire_when_the_inner_turn_ends(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat_nested.py::test_round_robin_deeply_nested_teams (outer
    conditions with sources inside the nested team). Cadre checks the outer condition once
    the nested team's turn has ended, so the inner run is never cut short."""
    inner = RoundRobinTeam(
        "drafting",
        [talker("drafter"), talker("editor")],
        termination=MaxMessages(max_messages=5),
    )
    outer = RoundRobinTeam(
        "desk", [talker("boss"), inner], termination=SourceMatch(sources=["editor"])
    )
    info, messages = await harness.run(outer, "memo")
    # the editor spoke mid-turn: the outer run stops, but only once the inner run has ended
    assert speakers(messages) == ["user", "boss", "drafter", "editor", "drafter"]
    assert info.stop_reason == "editor answered" and info.result == "drafter 2"


async def test_deeply_nested_teams_relay_every_level(harness: Harness) -> None:
    """AutoGen: test_group_chat_nested.py::test_round_robin_deeply_nested_teams (12 messages)."""
    innermost = RoundRobinTeam(
        "InnermostTeam",
        [
            scripted("agent1", "Hello from agent1", "Hello from agent1", "TERMINATE from agent1"),
            scripted(
                "agent2", "TERMINATE from agent2", "Hello from agent2", "TERMINATE from agent2"
            ),
        ],
        termination=TextMention(text="TERMINATE", sources=["agent1", "agent2"]),
    )
    middle = RoundRobinTeam(
        "MiddleTeam",
        [
            innermost,
            scripted(
                "agent3", "World from agent3", "TERMINATE from agent3", "TERMINATE from agent3"
            ),
        ],
        termination=TextMention(text="TERMINATE", sources=["agent3"]),
    )
    outermost = RoundRobinTeam(
        "OutermostTeam",
        [middle, scripted("agent4", "Review from agent4", "TERMINATE from agent4")],
        termination=TextMention(text="TERMINATE", sources=["agent4"]),
    )
    info, messages = await harness.run(outermost, "Test deep nesting")
    assert [m.content for m in messages] == [
        "Test deep nesting",
        "Hello from agent1",
        "TERMINATE from agent2",
        "World from agent3",
        "Hello from agent1",
        "Hello from agent2",
        "TERMINATE from agent1",
        "TERMINATE from agent3",
        "Review from agent4",
        "TERMINATE from agent2",
        "TERMINATE from agent3",
        "TERMINATE from agent4",
    ]
    assert info.stop_reason == "agent4 mentioned 'TERMINATE'"


async def test_a_selector_picks_a_nested_team_by_name(harness: Harness) -> None:
    """AutoGen: test_group_chat_nested.py::test_selector_group_chat_nested_teams_run."""
    inner = RoundRobinTeam(
        "coders",
        [scripted("assistant", "Here is the program"), scripted("code_executor", "Hello, world!")],
        max_turns=2,
    )
    selector = ReplayClient([pick("coders"), pick("reviewer")])
    team = SelectorTeam(
        "review",
        [inner, scripted("reviewer", "TERMINATE")],
        model=selector,
        termination=TextMention(text="TERMINATE"),
    )
    info, messages = await harness.run(team, "Write a program")
    assert speakers(messages) == ["user", "assistant", "code_executor", "reviewer"]
    assert "coders: the coders team" in selector.calls[0][0].content
    assert info.result == "TERMINATE"


async def test_a_nested_team_in_a_swarm_keeps_the_turn(harness: Harness) -> None:
    """AutoGen: test_group_chat_nested.py::test_swarm_doesnt_support_nested_teams. Differs:
    AutoGen refuses a team inside a Swarm at construction; Cadre accepts it, but a nested
    team cannot hand off, so once it has the turn it keeps it."""
    inner = RoundRobinTeam("inner", [talker("x")], max_turns=1)
    team = SwarmTeam("swarm-nested", [inner, talker("b")], termination=MaxMessages(max_messages=4))
    info, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "x", "x", "x"]
    assert {m.via for m in messages[1:]} == {"inner"} and info.status == "completed"


async def test_cancelling_an_outer_task_cancels_the_inner_run_and_both_can_go_on(
    harness: Harness,
) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_cancellation, with a nested
    team (test_group_chat_nested.py): the cancel reaches the inner team; continuing the
    outer task goes on with the speaker after it, and the inner team runs again in its
    next turn."""
    inner = RoundRobinTeam(
        "asking", [talker("asker"), UserProxy("human")], termination=TextMention(text="OK")
    )
    outer = RoundRobinTeam("lead-desk", [talker("lead"), inner], max_turns=3)
    task_id = await start(harness, outer, "Trip")
    assert (await harness.tasks.status(task_id)).speaker == "asking"
    await harness.tasks.cancel(task_id)
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.state(f"{task_id}/asking")).status == "cancelled"
    info, new = await resume(harness, task_id)
    assert (info.status, info.speaker) == ("awaiting_input", "asking")
    assert speakers(new) == ["lead", "asker"]
    assert new[-1].content == "asker 2" and new[-1].via == "asking"


# --- state: a task survives a restart (save_state / load_state) -----------------------------


def swarm_of_three(name: str) -> SwarmTeam:
    return SwarmTeam(
        name,
        [
            hander("second_agent", "third_agent"),
            hander("first_agent", "second_agent"),
            hander("third_agent", "first_agent"),
        ],
        termination=MaxMessages(max_messages=3),
    )


async def test_a_finished_round_robin_task_continues_in_another_runtime(tmp_path: Path) -> None:
    """AutoGen: test_group_chat.py::test_round_robin_group_chat_state (save_state, then
    load_state into a new team: in Cadre the store is the state; a new runtime on the same
    file continues the task)."""
    path = tmp_path / "cadre.db"
    registry = Registry()
    team = RoundRobinTeam(
        "durable",
        [talker("agent1"), talker("agent2"), talker("agent3")],
        termination=MaxMessages(max_messages=3),
    ).register(registry)
    async with LocalRuntime.sqlite(path, registry=registry) as first:
        task_id = await Tasks(first).submit(team, "go")
        await first.run_until_idle()
    again = Registry()
    RoundRobinTeam(  # a new process: the same team built again, fresh models
        "durable",
        [talker("agent1"), talker("agent2"), talker("agent3")],
        termination=MaxMessages(max_messages=3),
    ).register(again)
    async with LocalRuntime.sqlite(path, registry=again) as second:
        tasks = Tasks(second)
        await tasks.continue_task(task_id)
        await second.run_until_idle()
        info = await tasks.status(task_id)
        messages = await tasks.messages(task_id)
    assert speakers(messages) == ["user", "agent1", "agent2", "agent3", "agent1", "agent2"]
    assert info.status == "completed" and info.messages == 6


async def test_a_swarm_keeps_its_current_speaker_across_a_restart(tmp_path: Path) -> None:
    """AutoGen: test_group_chat.py::test_swarm_handoff_state (the current speaker is state)."""
    path = tmp_path / "cadre.db"
    registry = Registry()
    team = swarm_of_three("durable-swarm").register(registry)
    async with LocalRuntime.sqlite(path, registry=registry) as first:
        task_id = await Tasks(first).submit(team, "task")
        await first.run_until_idle()
        assert [m.handoff for m in await Tasks(first).messages(task_id) if m.handoff] == [
            "third_agent",
            "first_agent",
        ]
    again = Registry()
    swarm_of_three("durable-swarm").register(again)
    async with LocalRuntime.sqlite(path, registry=again) as second:
        tasks = Tasks(second)
        await tasks.continue_task(task_id)
        await second.run_until_idle()
        messages = await tasks.messages(task_id)
    # the run ended after third_agent handed off to first_agent: first_agent goes on
    assert [(m.source, m.handoff) for m in messages if m.handoff][2:] == [
        ("first_agent", "second_agent"),
        ("second_agent", "third_agent"),
        ("third_agent", "first_agent"),
    ]


async def test_a_selector_keeps_its_previous_speaker_across_a_restart(tmp_path: Path) -> None:
    """AutoGen: test_group_chat.py::test_selector_group_chat_state."""
    path = tmp_path / "cadre.db"

    def build(registry: Registry, selector: ReplayClient) -> SelectorTeam:
        team = SelectorTeam(
            "durable-sel", [talker("a"), talker("b"), talker("c")], model=selector, max_turns=1
        )
        return team.register(registry)  # type: ignore[return-value]

    registry = Registry()
    team = build(registry, ReplayClient([pick("b")]))
    async with LocalRuntime.sqlite(path, registry=registry) as first:
        task_id = await Tasks(first).submit(team, "go")
        await first.run_until_idle()
    selector = ReplayClient([pick("c")])
    again = Registry()
    build(again, selector)
    async with LocalRuntime.sqlite(path, registry=again) as second:
        tasks = Tasks(second)
        await tasks.continue_task(task_id)
        await second.run_until_idle()
        messages = await tasks.messages(task_id)
    assert speakers(messages) == ["user", "b", "c"]
    offered = selector.calls[0][0].content.split("select the next role from")[1]
    assert "'b'" not in offered  # b spoke last, before the restart


class Raising(TerminationCondition):
    """A condition of one's own whose check raises."""

    kind: Literal["parity_raising"] = "parity_raising"

    def _check(self, run: RunView, path: str) -> str | None:
        if run.count > 1:
            raise RuntimeError("the condition's own bug")
        return None


async def test_a_condition_that_raises_fails_the_task_with_the_reason(harness: Harness) -> None:
    """AutoGen's run() raises the condition's error; Cadre fails the task with it (durably),
    and `Tasks.wait` raises it as `TaskFailed`."""
    team = RoundRobinTeam("raising", [talker("a")], termination=Raising())
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, "go")
    await harness.runtime.run_until_idle()
    with pytest.raises(TaskFailed, match="the termination condition failed: RuntimeError"):
        await harness.tasks.wait(task_id)
    assert speakers(await harness.tasks.messages(task_id)) == ["user", "a"]
    assert await harness.runtime.store.list_dead_letters() == []  # nothing stuck
