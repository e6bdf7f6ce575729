"""A team task traced end to end on the local runtime: one trace whose tree is the message
flow, model and tool spans with GenAI attributes, token metrics equal to the replay
client's usage, team decisions as span events, content only when enabled."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from cadre import Agent, AgentId, Context, LocalRuntime, Message, Registry, handler, telemetry
from cadre.models import ModelResult, ReplayClient, ToolCall, Usage
from cadre.teams import (
    Assistant,
    MaxMessages,
    RoundRobinTeam,
    SelectorTeam,
    Tasks,
    TextMention,
    UserProxy,
)
from cadre.telemetry import LogContextFilter

from .conftest import Otel


def forecast(city: str) -> str:
    """The weather in a city."""
    if city == "Atlantis":
        raise LookupError("no such city")
    return f"{city}: sunny"


def said(text: str, prompt: int, completion: int) -> ModelResult:
    return ModelResult(
        content=text,
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
        model="gpt-4o-2024-08-06",
    )


def tool_call(city: str, prompt: int, completion: int) -> ModelResult:
    return ModelResult(
        tool_calls=(
            ToolCall(id=f"call-{prompt}", name="forecast", arguments=json.dumps({"city": city})),
        ),
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion),
        finish_reason="tool_calls",
        model="gpt-4o-2024-08-06",
    )


class Run:
    def __init__(self, runtime: LocalRuntime, registry: Registry) -> None:
        self.runtime, self.registry, self.tasks = runtime, registry, Tasks(runtime)

    async def task(self, team: RoundRobinTeam | SelectorTeam, text: str) -> str:
        team.register(self.registry)
        task_id = await self.tasks.submit(team, text)
        await self.runtime.run_until_idle()
        return task_id


@pytest.fixture
async def run(otel: Otel) -> AsyncIterator[Run]:
    registry = Registry()
    async with LocalRuntime(registry=registry) as runtime:
        yield Run(runtime, registry)


def weather_team(name: str = "weather") -> tuple[RoundRobinTeam, ReplayClient, ReplayClient]:
    writer_model = ReplayClient(
        [
            tool_call("Lisbon", 20, 8),
            said("Lisbon is sunny.", 31, 4),
            tool_call("Atlantis", 40, 9),
            said("Atlantis: unknown.", 60, 5),
        ],
        name="gpt-4o",
    )
    critic_model = ReplayClient([said("Good.", 25, 2), said("APPROVE", 50, 1)], name="gpt-4o-mini")
    writer = Assistant("writer", model=writer_model, tools=[forecast], reflect_on_tool_use=True)
    critic = Assistant("critic", model=critic_model)
    team = RoundRobinTeam(name, [writer, critic], termination=TextMention(text="APPROVE"))
    return team, writer_model, critic_model


def index(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


def parent(span: ReadableSpan, spans: dict[int, ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    return spans[span.parent.span_id]


def events(spans: list[ReadableSpan], name: str) -> list[dict[str, object]]:
    found = [
        (e.timestamp, dict(e.attributes or {})) for s in spans for e in s.events if e.name == name
    ]
    return [attributes for _, attributes in sorted(found, key=lambda pair: pair[0])]


async def test_a_team_task_is_one_trace_whose_tree_is_the_message_flow(
    otel: Otel, run: Run
) -> None:
    team, _, _ = weather_team()
    task_id = await run.task(team, "Weather in Lisbon?")
    spans = otel.finished()
    assert len({s.context.trace_id for s in spans}) == 1
    by_id = index(spans)
    process = sorted(
        (s for s in spans if s.kind is SpanKind.CONSUMER), key=lambda s: s.start_time or 0
    )
    # The manager and the participants take turns, as the transcript does.
    assert [s.attributes["cadre.agent.type"] for s in process] == [
        "cadre.team", "writer", "cadre.team", "critic", "cadre.team", "writer", "cadre.team",
        "critic", "cadre.team",
    ]  # fmt: skip
    assert all(s.attributes["messaging.message.conversation_id"] == task_id for s in process)
    for span in process:  # every step is a child of the span that produced its message
        producer = parent(span, by_id)
        assert producer.kind is SpanKind.PRODUCER
        assert producer.name == span.name.replace("process ", "send ", 1)
        assert producer.attributes["messaging.message.conversation_id"] == task_id
    [root] = [s for s in spans if s.parent is None]
    assert root.name == "send cadre.team.StartTask"
    for span in spans:  # every other span was made inside a step
        if span is not root and span.kind is not SpanKind.CONSUMER:
            assert parent(span, by_id).kind is SpanKind.CONSUMER, span.name
    # Model and tool calls sit in the step of the participant that made them.
    chats = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert [parent(s, by_id).attributes["cadre.agent.type"] for s in chats] == [
        "writer", "writer", "critic", "writer", "writer", "critic",
    ]  # fmt: skip
    tools = [s for s in spans if s.name == "execute_tool forecast"]
    assert {parent(s, by_id).attributes["cadre.agent.type"] for s in tools} == {"writer"}


async def test_model_spans_carry_genai_attributes_and_tokens_equal_the_replay_usage(
    otel: Otel, run: Run
) -> None:
    team, writer_model, critic_model = weather_team()
    task_id = await run.task(team, "Weather in Lisbon?")
    chats = [s for s in otel.finished() if s.kind is SpanKind.CLIENT]
    assert len(chats) == len(writer_model.calls) + len(critic_model.calls) == 6
    first = chats[0].attributes
    assert chats[0].name == "chat gpt-4o"
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.system"] == "cadre.replay"
    assert first["gen_ai.request.model"] == "gpt-4o"
    assert first["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert first["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (20, 8)
    assert first["gen_ai.agent.name"] == "writer" and first["cadre.agent.type"] == "writer"

    scripted = {  # the replay clients' usage, by agent, model and token type
        ("writer", "gpt-4o", "input"): 20 + 31 + 40 + 60,
        ("writer", "gpt-4o", "output"): 8 + 4 + 9 + 5,
        ("critic", "gpt-4o-mini", "input"): 25 + 50,
        ("critic", "gpt-4o-mini", "output"): 2 + 1,
    }
    recorded: Counter[tuple[object, object, object]] = Counter()
    for attributes, total in otel.histogram_sums("gen_ai.client.token.usage"):
        key = (
            attributes["cadre.agent.type"],
            attributes["gen_ai.request.model"],
            attributes["gen_ai.token.type"],
        )
        recorded[key] += total
    assert dict(recorded) == scripted
    usage = (await run.tasks.status(task_id)).usage_by_agent
    assert usage["writer"].prompt_tokens == scripted["writer", "gpt-4o", "input"]
    assert usage["critic"].completion_tokens == scripted["critic", "gpt-4o-mini", "output"]


async def test_tool_calls_are_spans_and_a_failing_tool_marks_its_span(otel: Otel, run: Run) -> None:
    team, _, _ = weather_team()
    await run.task(team, "Weather in Lisbon?")
    tools = [s for s in otel.finished() if s.name == "execute_tool forecast"]
    assert [s.attributes["gen_ai.tool.call.id"] for s in tools] == ["call-20", "call-40"]
    assert all(s.attributes["gen_ai.operation.name"] == "execute_tool" for s in tools)
    assert tools[0].status.status_code is StatusCode.UNSET
    assert tools[1].status.status_code is StatusCode.ERROR
    assert tools[1].attributes["error.type"] == "tool_error"


CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "cadre.message.content",
)


async def test_prompts_completions_and_tool_io_are_absent_by_default(otel: Otel, run: Run) -> None:
    team, _, _ = weather_team()
    await run.task(team, "Weather in Lisbon?")
    for span in otel.finished():
        assert not set(CONTENT_KEYS) & set(span.attributes or {}), span.name
        assert "Lisbon" not in json.dumps(dict(span.attributes or {})), span.name


async def test_content_capture_records_prompts_completions_and_tool_io(
    otel: Otel, run: Run
) -> None:
    telemetry.current().capture_content = True
    team, _, _ = weather_team()
    await run.task(team, "Weather in Lisbon?")
    spans = otel.finished()
    first_chat = next(s for s in spans if s.kind is SpanKind.CLIENT)
    prompt = json.loads(first_chat.attributes["gen_ai.input.messages"])  # type: ignore[arg-type]
    assert prompt[-1] == {"role": "user", "content": "Weather in Lisbon?", "name": "user"}
    answer = next(s for s in spans if s.attributes.get("gen_ai.usage.input_tokens") == 31)
    output = json.loads(answer.attributes["gen_ai.output.messages"])  # type: ignore[arg-type]
    assert output[0]["content"] == "Lisbon is sunny."
    tool = next(s for s in spans if s.name == "execute_tool forecast")
    assert tool.attributes["gen_ai.tool.call.arguments"] == '{"city": "Lisbon"}'
    assert tool.attributes["gen_ai.tool.call.result"] == "Lisbon: sunny"


async def test_team_decisions_are_events_on_the_manager_span(otel: Otel, run: Run) -> None:
    team, _, _ = weather_team()
    await run.task(team, "Weather in Lisbon?")
    spans = otel.finished()
    selected = events(spans, "cadre.team.speaker_selected")
    assert [(e["cadre.team.speaker"], e["cadre.team.selected_by"]) for e in selected] == [
        ("writer", "round robin"),
        ("critic", "round robin"),
        ("writer", "round robin"),
        ("critic", "round robin"),
    ]
    assert [e["cadre.team.turn"] for e in selected] == [1, 2, 3, 4]
    [ended] = events(spans, "cadre.team.terminated")
    assert ended["cadre.task.status"] == "completed"
    assert ended["cadre.team.reason"] == "critic mentioned 'APPROVE'"
    owners = {s.attributes["cadre.agent.type"] for s in spans if s.events}
    assert owners == {"cadre.team"}
    [(attributes, count)] = otel.metric_points("cadre.tasks")
    assert attributes == {"cadre.task.status": "completed", "cadre.team": "weather"} and count == 1
    [(_, durations)] = otel.metric_points("cadre.task.duration")
    assert durations == 1


async def test_selector_decisions_say_model_or_fallback(otel: Otel, run: Run) -> None:
    a = Assistant("a", model=ReplayClient(["from a"]))
    b = Assistant("b", model=ReplayClient(["from b", "b again"]))
    c = Assistant("c", model=ReplayClient(["from c"]))
    selector = ReplayClient(
        ['{"speaker": "b"}', "nobody", "still nobody", "nobody again"], name="picker"
    )
    team = SelectorTeam("pick", [a, b, c], model=selector, termination=MaxMessages(max_messages=3))
    await run.task(team, "go")
    spans = otel.finished()
    selected = events(spans, "cadre.team.speaker_selected")
    assert [(e["cadre.team.speaker"], e["cadre.team.selected_by"]) for e in selected] == [
        ("b", "selector model"),
        ("b", "selector fallback"),  # AutoGen's: the previous speaker
    ]
    picks = [s for s in spans if s.name == "chat picker"]
    assert len(picks) == 4
    assert {s.attributes["gen_ai.agent.name"] for s in picks} == {"pick.selector"}


async def test_awaiting_input_and_cancel_are_events(otel: Otel, run: Run) -> None:
    team = RoundRobinTeam("ask", [UserProxy("user")], termination=MaxMessages(max_messages=5))
    task_id = await run.task(team, "hello")
    [waiting] = events(otel.finished(), "cadre.team.awaiting_input")
    assert waiting["cadre.team.speaker"] == "user" and "cadre.team.prompt" not in waiting
    await run.tasks.cancel(task_id, reason="changed my mind")
    await run.runtime.run_until_idle()
    spans = otel.finished()
    [cancelled] = events(spans, "cadre.team.cancelled")
    assert cancelled["cadre.team.reason"] == "changed my mind"
    [ended] = events(spans, "cadre.team.terminated")
    assert ended["cadre.task.status"] == "cancelled"
    assert len({s.context.trace_id for s in spans}) == 2  # the cancel is its own request


class Shout(Message, name="test.obs.Shout"):
    text: str


class Shouter(Agent):
    @handler
    async def on_shout(self, msg: Shout, ctx: Context) -> None:
        ctx.logger.warning("heard %s", msg.text)


async def test_logs_in_a_handler_carry_the_step_trace_span_and_task(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    registry.register(Shouter, type="shouter")
    caplog.handler.addFilter(LogContextFilter())
    with caplog.at_level(logging.WARNING, logger="cadre.agent"):
        async with LocalRuntime(registry=registry) as rt:
            sent = await rt.send(AgentId("shouter", "k"), Shout(text="hi"))
            await rt.run_until_idle()
    [record] = [r for r in caplog.records if r.getMessage() == "heard hi"]
    [process] = [s for s in otel.finished() if s.name == "process test.obs.Shout"]
    assert record.trace_id == f"{process.context.trace_id:032x}"  # type: ignore[attr-defined]
    assert record.span_id == f"{process.context.span_id:016x}"  # type: ignore[attr-defined]
    assert record.task_id == sent.task_id  # type: ignore[attr-defined]
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "outside", None, None)
    LogContextFilter().filter(outside)
    assert (outside.trace_id, outside.span_id, outside.task_id) == ("", "", "")  # type: ignore[attr-defined]
