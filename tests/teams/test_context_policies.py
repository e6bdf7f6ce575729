"""Model context policies: what an assistant keeps of its conversation and sends the model."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from cadre import AgentId
from cadre.models import LLMMessage, ModelResult, OfflineClient, ReplayClient, ToolCall, ToolSpec
from cadre.models.context import (
    DEFAULT_CONTEXT_WINDOW,
    ModelContext,
    context_window,
    estimate_tokens,
    history_budget,
)
from cadre.teams import (
    Assistant,
    AssistantAgent,
    HeadAndTail,
    LastK,
    MaxMessages,
    RoundRobinTeam,
    TokenLimited,
    Unbounded,
)

from .conftest import Harness


def user(text: str) -> LLMMessage:
    return LLMMessage(role="user", content=text)


def said(text: str) -> LLMMessage:
    return LLMMessage(role="assistant", content=text)


def calls(*ids: str) -> LLMMessage:
    return LLMMessage(
        role="assistant", tool_calls=tuple(ToolCall(id=i, name="search") for i in ids)
    )


def result(call_id: str, text: str = "found") -> LLMMessage:
    return LLMMessage(role="tool", content=text, tool_call_id=call_id)


# u0, then a call with two results, an answer from them, and a new request
WITH_TOOLS = [user("u0"), calls("c1", "c2"), result("c1"), result("c2"), said("a1"), user("u1")]


def contents(messages: Sequence[LLMMessage]) -> list[str]:
    return [m.content or ",".join(c.id for c in m.tool_calls) for m in messages]


def assert_no_orphan_results(sent: Sequence[LLMMessage]) -> None:
    """Every tool result follows the assistant message that called it."""
    called: set[str] = set()
    for message in sent:
        called.update(c.id for c in message.tool_calls)
        if message.role == "tool":
            assert message.tool_call_id in called, contents(sent)


# --- the policies on their own ---


def test_unbounded_keeps_everything() -> None:
    assert Unbounded().keep(WITH_TOOLS, context_window=1) == WITH_TOOLS


def test_last_k_keeps_the_last_k_messages() -> None:
    assert contents(LastK(k=5).keep(WITH_TOOLS, context_window=0)) == [
        "c1,c2",
        "found",
        "found",
        "a1",
        "u1",
    ]
    assert LastK(k=100).keep(WITH_TOOLS, context_window=0) == WITH_TOOLS


def test_last_k_drops_tool_results_whose_call_falls_out() -> None:
    kept = LastK(k=4).keep(WITH_TOOLS, context_window=0)
    assert contents(kept) == ["a1", "u1"]
    assert contents(LastK(k=3).keep(WITH_TOOLS, context_window=0)) == ["a1", "u1"]


def test_last_k_keeps_a_call_with_its_results_when_they_are_the_newest() -> None:
    mid_turn = WITH_TOOLS[:4]  # the model is about to answer from the results
    assert LastK(k=1).keep(mid_turn, context_window=0) == mid_turn[1:]


def test_estimate_counts_text_bytes_tool_calls_and_a_per_message_cost() -> None:
    assert estimate_tokens(user("x" * 30)) == 10 + 4
    assert estimate_tokens(user("é" * 15)) == 10 + 4  # two UTF-8 bytes each
    call = LLMMessage(
        role="assistant", tool_calls=(ToolCall(id="c", name="search", arguments="x" * 53),)
    )
    assert estimate_tokens(call) == 20 + 4  # 1 + 6 + 53 bytes
    assert estimate_tokens(said("")) == 4


def test_token_limited_keeps_the_newest_messages_that_fit() -> None:
    history = [user(f"{i:02d}" + "x" * 28) for i in range(5)]  # 14 tokens each
    assert contents(TokenLimited(max_tokens=28).keep(history, context_window=10**6)) == [
        history[3].content,
        history[4].content,
    ]
    assert TokenLimited(max_tokens=70).keep(history, context_window=0) == history


def test_token_limited_without_a_limit_fills_the_window_it_is_given() -> None:
    history = [user("x" * 30) for _ in range(5)]  # 14 tokens each
    assert len(TokenLimited().keep(history, context_window=42)) == 3
    assert len(TokenLimited().keep(history, context_window=41)) == 2
    assert len(TokenLimited().keep(history, context_window=1000)) == 5


def test_token_limited_keeps_the_newest_message_even_when_it_alone_is_too_big() -> None:
    history = [user("short"), user("x" * 3000)]
    assert TokenLimited(max_tokens=10).keep(history, context_window=0) == history[1:]
    huge_result = [user("u0"), calls("c1"), result("c1", "x" * 3000)]
    assert TokenLimited(max_tokens=10).keep(huge_result, context_window=0) == huge_result[1:]


def test_token_limited_never_starts_with_tool_results() -> None:
    history = [user("u0"), calls("c1"), result("c1", "x" * 30), user("x" * 30)]
    budget = estimate_tokens(history[2]) + estimate_tokens(history[3])  # the cut splits c1
    kept = TokenLimited(max_tokens=budget).keep(history, context_window=0)
    assert kept == history[3:]


def test_head_and_tail_keeps_the_head_and_the_tail() -> None:
    history = [user(f"m{i}") for i in range(10)]
    kept = HeadAndTail(head=2, tail=3).keep(history, context_window=0)
    assert contents(kept) == ["m0", "m1", "m7", "m8", "m9"]
    assert HeadAndTail(head=2, tail=8).keep(history, context_window=0) == history
    assert contents(HeadAndTail(head=0, tail=2).keep(history, context_window=0)) == ["m8", "m9"]


def test_head_and_tail_never_cuts_a_tool_call_from_its_results() -> None:
    history = [*WITH_TOOLS, *(said(f"a{i}") for i in range(2, 8))]  # 12 messages
    head_ends_in_a_call = HeadAndTail(head=2, tail=2).keep(history, context_window=0)
    assert contents(head_ends_in_a_call) == ["u0", "c1,c2", "found", "found", "a6", "a7"]
    tail_starts_in_results = HeadAndTail(head=1, tail=9).keep(history, context_window=0)
    assert contents(tail_starts_in_results)[:3] == ["u0", "a1", "u1"]
    assert_no_orphan_results(tail_starts_in_results)


def test_head_and_tail_tells_the_model_how_many_messages_it_skipped() -> None:
    policy = HeadAndTail(head=1, tail=2)
    kept = policy.keep([user(f"m{i}") for i in range(6)], context_window=0)
    sent = policy.prompt(kept, skipped=3)
    assert [(m.role, m.content) for m in sent] == [
        ("user", "m0"),
        ("user", "Skipped 3 messages."),
        ("user", "m4"),
        ("user", "m5"),
    ]
    assert policy.prompt(kept, skipped=0) == kept


def test_keeping_again_what_was_kept_drops_nothing_more() -> None:
    history = [*WITH_TOOLS, *(said(f"a{i}") for i in range(2, 8))]
    policies: list[LastK | TokenLimited | HeadAndTail] = [
        LastK(k=4),
        LastK(k=9),
        TokenLimited(max_tokens=40),
        HeadAndTail(head=2, tail=3),
        HeadAndTail(head=1, tail=9),
    ]
    for policy in policies:
        kept = policy.keep(history, context_window=0)
        assert policy.keep(kept, context_window=0) == kept, policy
        assert_no_orphan_results(kept)


def test_policies_refuse_unknown_and_out_of_range_arguments() -> None:
    with pytest.raises(ValidationError, match="kk"):
        LastK(k=3, kk=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="max_token"):
        TokenLimited(max_token=1000)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LastK(k=0)
    with pytest.raises(ValidationError):
        HeadAndTail(head=-1, tail=2)
    with pytest.raises(ValidationError):
        HeadAndTail(head=2, tail=0)
    with pytest.raises(ValidationError):
        TokenLimited(max_tokens=0)
    with pytest.raises(ValidationError):
        LastK(k=2).k = 3  # type: ignore[misc]


def test_a_policy_is_plain_data_chosen_by_its_kind() -> None:
    adapter: TypeAdapter[ModelContext] = TypeAdapter(ModelContext)
    for policy in (Unbounded(), LastK(k=3), TokenLimited(), HeadAndTail(head=1, tail=4)):
        assert adapter.validate_json(adapter.dump_json(policy)) == policy
    assert adapter.validate_python({"kind": "last_k", "k": 7}) == LastK(k=7)


def test_the_context_window_comes_from_the_client_or_the_default() -> None:
    from cadre.models.openai import OpenAIClient

    assert context_window(OfflineClient()) == 4_096
    assert context_window(ReplayClient([])) == 4_096
    assert OpenAIClient.context_window == 128_000
    assert context_window(object()) == DEFAULT_CONTEXT_WINDOW == 8_192
    replay = ReplayClient([])
    replay.context_window = 1_000
    assert context_window(replay) == 1_000


def test_the_history_budget_leaves_room_for_the_system_message_and_tools() -> None:
    system = LLMMessage(role="system", content="x" * 300)  # 104 tokens
    assert history_budget(1000, system) == 896
    tool = ToolSpec(name="search", parameters={"type": "object", "properties": {}})
    assert history_budget(1000, system, [tool]) < 896
    assert history_budget(50, system) == 0


# --- an assistant in a team ---


class RecordingOffline(OfflineClient):
    """The offline model, remembering what each call was sent."""

    def __init__(self) -> None:
        self.sent: list[list[LLMMessage]] = []

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        self.sent.append(list(messages))
        return await super().create(messages, tools, output_schema)


def lookup(topic: str) -> str:
    """Look a topic up."""
    return f"notes on {topic}"


async def stored_state(harness: Harness, name: str, task_id: str) -> tuple[int, int, int]:
    """The writer's stored state: its JSON size, its history length, its skipped count."""
    record = await harness.runtime.store.load(AgentId(name, task_id))
    assert record.state is not None
    state = AssistantAgent.State.model_validate_json(record.state)
    return len(record.state), len(state.history), state.skipped


async def run_long_task(
    harness: Harness, policy: ModelContext | None, messages: int, name: str
) -> tuple[tuple[int, int, int], RecordingOffline]:
    model = RecordingOffline()
    writer = Assistant(
        f"{name}_writer",
        system_message="You are a writer.",
        model=model,
        tools=[lookup],
        model_context=policy,
    )
    critic = Assistant(f"{name}_critic", system_message="You are a critic.", model=OfflineClient())
    team = RoundRobinTeam(
        name,
        [writer, critic],
        termination=MaxMessages(max_messages=messages, include_agent_event=True),
    )
    info, transcript = await harness.run(team, "Write about the history of Lisbon " * 5)
    assert info.status == "completed"
    assert len(transcript) == messages  # the task, then rounds of 3 writer messages + 1 critic
    return await stored_state(harness, writer.agent_type, info.task_id), model


@pytest.mark.parametrize(
    ("policy", "max_kept"),
    [
        (None, OfflineClient.context_window // 4),  # every message costs 4 tokens or more
        (LastK(k=12), 12),
        (HeadAndTail(head=2, tail=10), 14),  # 12, and a head's tool call results
    ],
    ids=["default", "last_k", "head_and_tail"],
)
async def test_a_long_task_keeps_the_stored_history_bounded(
    harness: Harness, policy: ModelContext | None, max_kept: int
) -> None:
    (shorter_size, shorter_len, _), _ = await run_long_task(harness, policy, 149, "shorter")
    (size, length, skipped), model = await run_long_task(harness, policy, 449, "longer")
    assert length <= max_kept
    assert size < 32_768  # an unbounded history passes this size after ~170 messages here
    assert size < shorter_size * 1.1  # three times the messages, not more stored
    assert length < shorter_len * 1.1
    assert length + skipped == 449 - 1  # all but the critic's last, each counted once
    for sent in model.sent:
        assert sent[0].role == "system"
        assert_no_orphan_results(sent)
        if policy is None:  # the default fits the offline model's window
            assert sum(estimate_tokens(m) for m in sent) <= OfflineClient.context_window


async def test_unbounded_grows_with_the_task(harness: Harness) -> None:
    (shorter_size, shorter_len, _), _ = await run_long_task(harness, Unbounded(), 149, "shorter")
    (size, length, skipped), _ = await run_long_task(harness, Unbounded(), 449, "longer")
    assert skipped == 0
    assert length > 2.5 * shorter_len
    assert size > 2.5 * shorter_size > 32_768


async def test_the_model_is_sent_exactly_what_is_kept(harness: Harness) -> None:
    writer_model = ReplayClient([f"draft {i}" for i in range(20)])
    writer = Assistant("writer", model=writer_model, model_context=LastK(k=3))
    critic = Assistant("critic", model=ReplayClient([f"note {i}" for i in range(20)]))
    team = RoundRobinTeam("kept", [writer, critic], termination=MaxMessages(max_messages=21))
    info, _ = await harness.run(team, "Write")
    assert len(writer_model.calls) == 10
    assert all(len(sent) <= 1 + 3 for sent in writer_model.calls)
    _, length, skipped = await stored_state(harness, "writer", info.task_id)
    state = await harness.runtime.state(AgentId("writer", info.task_id))
    assert isinstance(state, AssistantAgent.State)
    last_sent = writer_model.calls[-1]  # the critic's last note came after it
    assert [m.content for m in last_sent[1:]] == ["note 7", "draft 8", "note 8"]
    assert [m.content for m in state.history] == ["draft 8", "note 8", "draft 9"]
    assert length + skipped == 1 + 9 + 10  # the task, notes 0-8, drafts 0-9


async def test_token_limited_fits_the_model_window(harness: Harness) -> None:
    writer_model = ReplayClient([f"draft {i} " + "word " * 40 for i in range(20)])
    writer_model.context_window = 400
    writer = Assistant("writer", system_message="You write.", model=writer_model)
    critic = Assistant("critic", model=ReplayClient([f"note {i} " + "x " * 40 for i in range(20)]))
    team = RoundRobinTeam("window", [writer, critic], termination=MaxMessages(max_messages=21))
    info, _ = await harness.run(team, "Write")
    assert info.status == "completed"
    budget = history_budget(400, LLMMessage(role="system", content="You write."))
    for sent in writer_model.calls:
        assert sum(estimate_tokens(m) for m in sent[1:]) <= budget
    for turn, sent in enumerate(writer_model.calls[1:]):
        assert sent[-1].content.startswith(f"note {turn} ")  # the newest is always sent
    assert not any(m.content == "Write" for m in writer_model.calls[-1])  # the task fell out


async def test_head_and_tail_keeps_the_task_and_counts_what_it_skipped(harness: Harness) -> None:
    writer_model = ReplayClient([f"draft {i}" for i in range(20)])
    writer = Assistant("writer", model=writer_model, model_context=HeadAndTail(head=1, tail=2))
    critic = Assistant("critic", model=ReplayClient([f"note {i}" for i in range(20)]))
    team = RoundRobinTeam("head", [writer, critic], termination=MaxMessages(max_messages=21))
    info, _ = await harness.run(team, "Write a poem")
    state = await harness.runtime.state(AgentId("writer", info.task_id))
    assert isinstance(state, AssistantAgent.State)
    assert [m.content for m in state.history] == ["Write a poem", "note 8", "draft 9"]
    assert state.skipped == 1 + 9 + 10 - 3  # the task, notes 0-8, drafts 0-9; 3 kept
    last_sent = writer_model.calls[-1]
    assert [m.content for m in last_sent[1:]] == [
        "Write a poem",
        "Skipped 16 messages.",
        "draft 8",
        "note 8",
    ]
