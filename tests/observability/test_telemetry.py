"""Spans, metrics and log correlation, read back through the OpenTelemetry SDK's
in-memory exporters: a task is one trace whose tree is the message flow."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from cadre import AgentId, LocalRuntime, RetryPolicy, telemetry
from cadre.telemetry import LogContextFilter, Telemetry
from tests.support.contracts import Add, Fail, Note, make_registry

from .conftest import Otel

COUNTER, RECORDER, ANNOUNCER = (
    AgentId("counter", "a"),
    AgentId("recorder", "a"),
    AgentId("announcer", "a"),
)
FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.001)


def by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {s.context.span_id: s for s in spans}


async def test_a_task_is_one_trace_whose_tree_is_the_message_flow(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry()) as rt:
        sent = await rt.send(COUNTER, Add(amount=2), reply_to=RECORDER)
        await rt.run_until_idle()
    spans = otel.finished()
    assert len({s.context.trace_id for s in spans}) == 1
    index = by_id(spans)
    process = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert [s.name for s in process] == ["process test.Add", "process test.Added"]
    for span in process:
        producer = index[span.parent.span_id]  # type: ignore[union-attr]
        assert producer.kind is SpanKind.PRODUCER
        assert producer.name == span.name.replace("process ", "send ", 1)
    # The reply's producer is a child of the step that sent it: parent to child, no links.
    reply_producer = index[process[1].parent.span_id]  # type: ignore[union-attr]
    assert reply_producer.parent.span_id == process[0].context.span_id  # type: ignore[union-attr]
    root = index[process[0].parent.span_id]  # type: ignore[union-attr]
    assert root.parent is None  # the external send starts the trace
    assert root.attributes["messaging.message.id"] == sent.id
    # A handled step carries only what finds it (each attribute costs the SDK): the agent
    # and the task; message id, attempt and outcome come with any other outcome.
    assert dict(process[0].attributes or {}) == {
        "cadre.agent.type": "counter",
        "cadre.agent.key": "a",
        "messaging.message.conversation_id": sent.task_id,
    }


async def test_a_topic_publish_is_one_producer_span_parent_of_every_delivery(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry()) as rt:
        await rt.send(ANNOUNCER, Note(text="hello"))
        await rt.run_until_idle()
    spans = otel.finished()
    [publish] = [s for s in spans if s.name == "publish test.Broadcast"]
    deliveries = [s for s in spans if s.name == "process test.Broadcast"]
    assert sorted(s.attributes["cadre.agent.type"] for s in deliveries) == [  # type: ignore[index]
        "listener",
        "recorder",
    ]
    assert {s.parent.span_id for s in deliveries} == {publish.context.span_id}  # type: ignore[union-attr]


async def test_retries_and_dead_letters_are_outcomes_with_error_status(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry(), policy=FAST) as rt:
        await rt.send(COUNTER, Fail(times=5), reply_to=RECORDER)
        await rt.run_until_idle()
    process = [s for s in otel.finished() if s.name == "process test.Fail"]
    assert [s.attributes["cadre.outcome"] for s in process] == ["retried", "dead_lettered"]
    assert [s.attributes["cadre.delivery.attempt"] for s in process] == [1, 2]
    assert all(s.status.status_code is StatusCode.ERROR for s in process)
    assert process[1].attributes["cadre.dead_letter.reason"] == "handler_failed"
    dead = otel.metric_points("cadre.dead_letters")
    assert dead == [
        ({"cadre.agent.type": "counter", "cadre.dead_letter.reason": "handler_failed"}, 1)
    ]


async def test_step_metrics_count_messages_by_agent_type_and_outcome(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry()) as rt:
        for amount in (1, 2, 3):
            await rt.send(COUNTER, Add(amount=amount), reply_to=RECORDER)
        await rt.run_until_idle()
    consumed = {
        (a["cadre.agent.type"], a["cadre.outcome"]): v
        for a, v in otel.metric_points("messaging.client.consumed.messages")
    }
    assert consumed == {("counter", "handled"): 3, ("recorder", "handled"): 3}
    durations = {
        a["cadre.agent.type"]: n for a, n in otel.metric_points("messaging.process.duration")
    }
    assert durations == {"counter": 3, "recorder": 3}


async def test_message_content_is_recorded_only_when_enabled(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry()) as rt:
        await rt.send(COUNTER, Add(amount=41), reply_to=RECORDER)
        await rt.run_until_idle()
    assert not any("cadre.message.content" in (s.attributes or {}) for s in otel.finished())

    otel.spans.clear()
    telemetry.current().capture_content = True
    async with LocalRuntime(registry=make_registry()) as rt:
        await rt.send(COUNTER, Add(amount=41), reply_to=RECORDER)
        await rt.run_until_idle()
    [process] = [s for s in otel.finished() if s.name == "process test.Add"]
    assert process.attributes["cadre.message.content"] == '{"amount":41}'


async def test_logs_inside_a_step_carry_its_trace_span_and_task(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(LogContextFilter())
    with caplog.at_level(logging.WARNING, logger="cadre.processing"):
        async with LocalRuntime(registry=make_registry(), policy=FAST) as rt:
            sent = await rt.send(COUNTER, Fail(times=1), reply_to=RECORDER)
            await rt.run_until_idle()
    [record] = [r for r in caplog.records if "retrying" in r.getMessage()]
    [process] = [s for s in otel.finished() if s.attributes.get("cadre.delivery.attempt") == 1]
    assert record.trace_id == f"{process.context.trace_id:032x}"  # type: ignore[attr-defined]
    assert record.span_id == f"{process.context.span_id:016x}"  # type: ignore[attr-defined]
    assert record.task_id == sent.task_id  # type: ignore[attr-defined]


async def test_without_an_sdk_nothing_is_recorded_and_traceparents_pass_through() -> None:
    with telemetry.installed(Telemetry()):  # the global providers: the API's no-ops here
        async with LocalRuntime(registry=make_registry()) as rt:
            sent = await rt.send(COUNTER, Add(amount=1), reply_to=RECORDER)
            assert sent.traceparent is None
            await rt.run_until_idle()
        assert not telemetry.current().tracing


async def test_unreadable_bytes_count_as_a_dead_letter(otel: Otel) -> None:
    async with LocalRuntime(registry=make_registry()) as rt:
        processed = await rt.processor.process(b"not an envelope")
    assert processed.dead_letter is not None
    assert otel.metric_points("cadre.dead_letters") == [
        ({"cadre.agent.type": "", "cadre.dead_letter.reason": "envelope_invalid"}, 1)
    ]


async def test_without_send_spans_each_step_is_the_parent_of_the_next(otel: Otel) -> None:
    telemetry.current().trace_sends = False  # CADRE_TRACE_SENDS=false
    async with LocalRuntime(registry=make_registry()) as rt:
        await rt.send(COUNTER, Add(amount=2), reply_to=RECORDER)
        await rt.run_until_idle()
    spans = otel.finished()
    assert [s.name for s in spans] == ["send test.Add", "process test.Add", "process test.Added"]
    send, add, added = spans
    assert len({s.context.trace_id for s in spans}) == 1
    assert add.parent.span_id == send.context.span_id  # type: ignore[union-attr]
    assert added.parent.span_id == add.context.span_id  # type: ignore[union-attr]
