"""Sampling is per task: decided once at the task's root, carried in the traceparent flags.

A sampled task has every span; a task not sampled has none, and its steps build no span
and no attributes (the SDK's tracer is not even asked), whatever the sampler would say
about a span of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, TraceIdRatioBased
from opentelemetry.trace import SpanContext, TraceFlags

from cadre import AgentId, LocalRuntime, telemetry
from cadre.envelope import Envelope, new_id, utcnow
from cadre.models import OfflineClient
from cadre.processing import Disposition, Processor
from cadre.step import Step
from cadre.stores.memory import MemoryStore
from cadre.teams import Assistant, RoundRobinTeam, TextMention
from cadre.teams.tasks import Tasks
from tests.support.contracts import Add, make_registry
from tests.support.faults import RecordingTransport

TASKS = 40


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.5), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
        yield exporter
    provider.shutdown()


def count_span_starts(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many spans Cadre asks the SDK for, by kind of span."""
    started: Counter[str] = Counter()
    original = telemetry.Telemetry._start_process_span

    def counted(self: telemetry.Telemetry, envelope: object) -> object:
        started["process"] += 1
        return original(self, envelope)  # type: ignore[arg-type]

    monkeypatch.setattr(telemetry.Telemetry, "_start_process_span", counted)
    return started


async def test_whole_tasks_are_sampled_and_the_others_build_no_span(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = count_span_starts(monkeypatch)
    async with LocalRuntime(registry=make_registry()) as rt:
        sent = [
            await rt.send(
                AgentId("counter", str(i)), Add(amount=i), reply_to=AgentId("recorder", str(i))
            )
            for i in range(TASKS)
        ]
        await rt.run_until_idle()
    finished = spans.get_finished_spans()
    by_task = Counter(s.attributes["messaging.message.conversation_id"] for s in finished)  # type: ignore[index]
    # A sampled task has all three spans (the client's send, two steps); no task has fewer.
    assert set(by_task.values()) == {3}
    assert 5 <= len(by_task) <= TASKS - 5  # about half, whole
    traced = set(by_task)
    for envelope in sent:  # the decision rides in the traceparent flags
        assert envelope.traceparent is not None
        assert envelope.traceparent.endswith(("1", "3")) == (envelope.task_id in traced)
    # Only the steps of sampled tasks asked the SDK for a span.
    assert started["process"] == 2 * len(traced)
    assert all(s.context.trace_flags.sampled for s in finished)


async def test_a_team_task_not_sampled_records_no_model_or_tool_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sampler that would take any new root: only the task's root decides, so nothing in
    # a task whose root said no may start a trace of its own.
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=TraceIdRatioBased(1.0), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    started = count_span_starts(monkeypatch)
    tel = telemetry.Telemetry(tracer_provider=provider)
    writer = Assistant("sp_writer", model=OfflineClient(), system_message="Write.")
    critic = Assistant("sp_critic", model=OfflineClient(), system_message="Say APPROVE.")
    team = RoundRobinTeam("sampled_out", [writer, critic], termination=TextMention(text="APPROVE"))
    registry = make_registry()
    team.register(registry)
    with telemetry.installed(tel):
        async with LocalRuntime(registry=registry) as rt:
            # The root of the task says "not sampled" (as a parent-based sampler decided
            # at an HTTP request, say): the flags of its traceparent.
            with telemetry.host_span(_unsampled_context()):
                task_id = await Tasks(rt).submit("sampled_out", "Plan a day")
            await rt.run_until_idle()
            assert (await Tasks(rt).status(task_id)).status == "completed"
    assert started["process"] == 0
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


async def test_envelopes_of_tasks_not_sampled_run_as_one_step_and_a_sampled_one_alone(
    spans: InMemorySpanExporter,
) -> None:
    # Batching (`Processor.process_many`, as a worker does for one agent's queue) keeps one
    # span per step of a sampled task: a batch holding one goes one by one; a batch of
    # tasks not sampled has no span to keep apart, so it is one step, tracing on or off.
    sent = RecordingTransport()
    processor = Processor(Step(MemoryStore(), sent, registry=make_registry()))
    quiet = [_add(i, "00") for i in range(3)]
    processed = await processor.process_many(quiet)
    assert processed is not None
    assert {p.disposition for p in processed} == {Disposition.HANDLED}
    assert spans.get_finished_spans() == ()
    # what they sent carries their traceparents on: the task stays unsampled downstream
    assert sent.sent and {e.traceparent for e in sent.sent} <= {e.traceparent for e in quiet}
    mixed = [_add(3, "00"), _add(4, "01")]
    assert await processor.process_many(mixed) is None
    for envelope in mixed:
        await processor.process(envelope)
    (span,) = spans.get_finished_spans()  # the sampled one, alone in its step
    assert span.attributes["messaging.message.conversation_id"] == mixed[1].task_id  # type: ignore[index]


def _add(amount: int, flags: str) -> Envelope:
    task = new_id()
    return Envelope(
        id=new_id(),
        message=Add.message_name,
        version=Add.message_version,
        payload={"amount": amount},
        task_id=task,
        recipient="counter/a",
        reply_to="recorder/a",
        created_at=utcnow(),
        traceparent=f"00-{task}-{new_id()[:16]}-{flags}",
    )


def _unsampled_context() -> SpanContext:
    return SpanContext(
        trace_id=0x5B8EFFF798038103D269B633813FC60C,
        span_id=0xEEE19B7EC3C1B174,
        is_remote=True,
        trace_flags=TraceFlags(0),
    )
