"""Cadre's per-message spans made without the SDK's general path (`cadre.telemetry._sdk_spans`)
are the spans the SDK's `Tracer.start_span` makes: same sampling, ids, flags, attributes and
limits, the same processor calls, and every span method behaves the same after start and
after end. Where this path does not know the SDK, the SDK's own path is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from cadre import AgentId, LocalRuntime, telemetry
from cadre.envelope import Envelope, new_id, utcnow
from cadre.processing import Processor
from cadre.step import Step
from cadre.stores.memory import MemoryStore
from cadre.telemetry import _sdk_spans, _span_contexts
from cadre.telemetry._sdk_spans import FastSpans, fast_spans
from tests.support.contracts import Add, make_registry
from tests.support.faults import RecordingTransport

PARENT = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
ATTRIBUTES = {"cadre.agent.type": "counter", "cadre.agent.key": "7", "cadre.message.version": 2}


class Recording(SpanProcessor):
    """A processor that notes every call it gets."""

    def __init__(self) -> None:
        self.started: list[tuple[str, otel_context.Context | None]] = []
        self.ending: list[str] = []
        self.ended: list[ReadableSpan] = []

    def on_start(self, span: Any, parent_context: otel_context.Context | None = None) -> None:
        self.started.append((span.name, parent_context))

    def _on_ending(self, span: Any) -> None:
        self.ending.append(span.name)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class Tagging(Sampler):
    """A sampler that samples everything, adds an attribute and a trace state entry."""

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kw: Any):  # type: ignore[no-untyped-def]
        attributes = dict(kw.get("attributes") or (args[1] if len(args) > 1 else {}) or {})
        attributes["sampled.by"] = "tagging"
        return SamplingResult(
            Decision.RECORD_AND_SAMPLE, attributes, TraceState([("vendor", "on")])
        )

    def get_description(self) -> str:
        return "Tagging"


def make(
    sampler: Sampler | None = None, limits: SpanLimits | None = None
) -> tuple[trace.Tracer, FastSpans, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("cadre")
    fast = fast_spans(tracer)
    assert fast is not None
    return tracer, fast, exporter


def both(
    tracer: trace.Tracer,
    fast: FastSpans,
    parent: SpanContext | None,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    then: Callable[[trace.Span], None] = lambda span: None,
) -> tuple[trace.Span, trace.Span]:
    """The span the SDK's path starts and the one `FastSpans` starts, each given `then`
    and ended."""
    context = (
        trace.set_span_in_context(trace.NonRecordingSpan(parent), otel_context.Context())
        if parent is not None
        else None
    )
    sdk = tracer.start_span("process test.Add", context=context, kind=kind, attributes=ATTRIBUTES)
    ours = fast.start("process test.Add", kind, parent, dict(ATTRIBUTES))
    for span in (sdk, ours):
        then(span)
        span.end()
    return sdk, ours


def exported(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads of a span, but its own span id and its times."""
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "trace_id": span.context.trace_id,
        "flags": span.context.trace_flags,
        "trace_state": span.context.trace_state,
        "remote": span.context.is_remote,
        "attributes": dict(span.attributes),
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, dict(e.attributes)) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes)) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "timed": span.start_time is not None and span.start_time <= span.end_time,
    }


def same_spans(exporter: InMemorySpanExporter) -> None:
    sdk, ours = exporter.get_finished_spans()
    assert exported(ours) == exported(sdk)
    assert ours.context.span_id != sdk.context.span_id


@pytest.mark.parametrize(
    "parent",
    [
        PARENT,
        SpanContext(PARENT.trace_id, PARENT.span_id, True, TraceFlags(0x03)),  # random trace id
        SpanContext(PARENT.trace_id, PARENT.span_id, True, TraceFlags(1), TraceState([("a", "b")])),
    ],
    ids=["sampled", "random-trace-id", "trace-state"],
)
def test_a_child_of_a_sampled_parent_is_the_sdks_span(parent: SpanContext) -> None:
    tracer, fast, exporter = make()
    sdk, ours = both(tracer, fast, parent)
    same_spans(exporter)
    assert type(ours).__mro__[1] is type(sdk)  # the SDK's span class, lists made lazily


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, Tagging(), ParentBased(Tagging(), remote_parent_sampled=Tagging())],
    ids=["always-on", "tagging", "parent-based-tagging"],
)
def test_a_sampler_that_is_asked_answers_as_for_the_sdk(sampler: Sampler) -> None:
    tracer, fast, exporter = make(sampler)
    both(tracer, fast, PARENT)
    same_spans(exporter)


def test_a_child_of_an_unsampled_parent_is_not_recorded_either_way() -> None:
    tracer, fast, exporter = make()
    unsampled = SpanContext(PARENT.trace_id, PARENT.span_id, True, TraceFlags(0))
    sdk, ours = both(tracer, fast, unsampled)
    assert not ours.is_recording() and not sdk.is_recording()
    theirs, mine = sdk.get_span_context(), ours.get_span_context()
    assert (mine.trace_id, mine.trace_flags) == (theirs.trace_id, theirs.trace_flags)
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_a_new_trace_is_sampled_by_the_root_sampler(ratio: float) -> None:
    tracer, fast, exporter = make(ParentBasedTraceIdRatio(ratio))
    sdk, ours = both(tracer, fast, None, kind=SpanKind.PRODUCER)
    assert ours.get_span_context().trace_flags == sdk.get_span_context().trace_flags
    assert ours.get_span_context().trace_flags.sampled == (ratio == 1.0)
    assert len(exporter.get_finished_spans()) == (2 if ratio else 0)
    if ratio:
        mine, theirs = (exported(s) for s in exporter.get_finished_spans()[::-1])
        assert mine["trace_id"] != theirs["trace_id"]  # a new trace each
        assert {**mine, "trace_id": 0} == {**theirs, "trace_id": 0}


class Repeating(RandomIdGenerator):
    """Trace ids from a list, each given twice (once to the SDK's path, once to this one)."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = iter(t for trace_id in trace_ids for t in (trace_id, trace_id))

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


BOUNDARY_TRACE_IDS = [(7 << 64) | ((1 << 63) - 1), (7 << 64) | (1 << 63), 1, (1 << 128) - 1]
"""Trace ids whose low 64 bits are just under and just over a ratio of 0.5's bound, and the
extremes."""


def with_trace_ids(
    sampler: Sampler, trace_ids: list[int]
) -> tuple[trace.Tracer, FastSpans, InMemorySpanExporter]:
    """`make`, with `Repeating` trace ids."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        sampler=sampler, id_generator=Repeating(trace_ids), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("cadre")
    fast = fast_spans(tracer)
    assert fast is not None
    return tracer, fast, exporter


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (ParentBasedTraceIdRatio(0.5), [True, False, True, False]),
        (ParentBased(ALWAYS_ON), [True] * 4),
        (ParentBased(ALWAYS_OFF), [False] * 4),
    ],
    ids=["ratio-0.5", "always-on", "always-off"],
)
def test_a_new_traces_decision_is_the_root_samplers(sampler: Sampler, expected: list[bool]) -> None:
    trace_ids = BOUNDARY_TRACE_IDS
    tracer, fast, exporter = with_trace_ids(sampler, trace_ids)
    decisions = []
    for _ in trace_ids:
        sdk, ours = both(tracer, fast, None, kind=SpanKind.PRODUCER)
        assert ours.get_span_context().trace_id == sdk.get_span_context().trace_id
        assert ours.get_span_context().trace_flags == sdk.get_span_context().trace_flags
        decisions.append(ours.get_span_context().trace_flags.sampled)
    assert decisions == expected
    spans = exporter.get_finished_spans()
    assert len(spans) == 2 * sum(decisions)
    for sdk_span, our_span in zip(spans[::2], spans[1::2], strict=True):
        assert exported(our_span) == exported(sdk_span)


@pytest.mark.parametrize(
    "limits",
    [SpanLimits(max_span_attributes=2), SpanLimits(max_span_attribute_length=3)],
    ids=["count", "length"],
)
def test_span_limits_cut_the_attributes_as_the_sdk_does(limits: SpanLimits) -> None:
    tracer, fast, exporter = make(limits=limits)
    both(tracer, fast, PARENT)
    same_spans(exporter)
    assert exporter.get_finished_spans()[1].dropped_attributes == (
        1 if limits.max_span_attributes == 2 else 0
    )


def test_what_a_step_does_with_its_span_is_recorded_the_same() -> None:
    tracer, fast, exporter = make()
    linked = SpanContext(0x1, 0x2, True, TraceFlags(1))

    def use(span: trace.Span) -> None:
        span.set_attribute("cadre.outcome", "dead_lettered")
        span.set_attributes({"cadre.delivery.attempt": 3, "long": "x" * 10})
        span.add_event("cadre.team.speaker_selected", {"speaker": "critic"})
        span.add_link(linked, {"why": "host"})
        span.record_exception(ValueError("bad"))
        span.set_status(Status(StatusCode.ERROR, "handler failed"))
        span.update_name("process test.Renamed")

    both(tracer, fast, PARENT, then=use)
    same_spans(exporter)
    ours = exporter.get_finished_spans()[1]
    assert [e.name for e in ours.events] == ["cadre.team.speaker_selected", "exception"]
    assert ours.events[1].attributes["exception.type"] == "ValueError"  # type: ignore[index]


def test_an_ended_span_changes_no_more(caplog: pytest.LogCaptureFixture) -> None:
    _, fast, exporter = make()
    span = fast.start("process test.Add", SpanKind.CONSUMER, PARENT, dict(ATTRIBUTES))
    span.end()
    [ended] = exporter.get_finished_spans()
    assert ended is span  # the processors get the ended span itself, not a copy
    before = exported(ended)
    with caplog.at_level(logging.WARNING):
        span.set_attribute("late", 1)
        span.add_event("late")
        span.set_status(Status(StatusCode.ERROR, "late"))
        span.update_name("late")
        span.end()
    assert exported(ended) == before
    assert not span.is_recording()
    assert len(exporter.get_finished_spans()) == 1


def test_processors_are_called_as_by_the_sdk_and_one_added_later_too() -> None:
    tracer, fast, _ = make()
    provider = tracer.span_processor  # type: ignore[attr-defined]
    first = Recording()
    provider.add_span_processor(first)
    both(tracer, fast, PARENT)
    later = Recording()
    provider.add_span_processor(later)
    both(tracer, fast, PARENT)
    assert [name for name, _ in first.started] == ["process test.Add"] * 4
    assert [name for name, _ in later.started] == ["process test.Add"] * 2
    for _, parent_context in first.started + later.started:  # the parent, in its context
        assert trace.get_current_span(parent_context).get_span_context() == PARENT
    assert len(first.ending) == len(first.ended) == 4
    assert len(later.ending) == len(later.ended) == 2


def test_a_disabled_tracer_starts_no_span() -> None:
    tracer, fast, exporter = make()
    configure = getattr(tracer, "_set_tracer_config", None)
    if configure is None:
        pytest.skip("this SDK has no tracer configuration")
    from opentelemetry.sdk.trace import _TracerConfig

    configure(_TracerConfig(is_enabled=False))
    sdk, ours = both(tracer, fast, PARENT)
    assert not ours.is_recording() and not sdk.is_recording()
    assert ours.get_span_context() == sdk.get_span_context() == PARENT
    assert exporter.get_finished_spans() == ()


def test_an_sdk_it_does_not_know_gets_the_sdks_own_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracer, _, _ = make()
    assert fast_spans(trace.NoOpTracer()) is None
    monkeypatch.setattr(_sdk_spans, "_CONSTANT_FIELDS", _sdk_spans._CONSTANT_FIELDS - {"_status"})
    assert fast_spans(tracer) is None
    monkeypatch.setattr(_sdk_spans, "_ATTRIBUTES_FIELDS", frozenset({"_dict"}))
    assert fast_spans(tracer) is None


@pytest.fixture
def otel_sdk() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def run_tasks(provider: TracerProvider) -> None:
    with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
        async with LocalRuntime(registry=make_registry()) as rt:
            for i in range(3):
                await rt.send(
                    AgentId("counter", str(i)), Add(amount=i), reply_to=AgentId("recorder", str(i))
                )
            await rt.run_until_idle()


def trees(spans: Sequence[ReadableSpan]) -> list[tuple[Any, ...]]:
    """Each span as its name, kind, attributes (ids left out) and its parent's name."""
    names = {s.context.span_id: s.name for s in spans}
    ids = {"messaging.message.id", "messaging.message.conversation_id"}
    return sorted(
        (
            s.name,
            s.kind,
            sorted((k, v) for k, v in s.attributes.items() if k not in ids),
            names.get(s.parent.span_id) if s.parent else None,
        )
        for s in spans
    )


async def test_tasks_are_traced_the_same_with_the_fast_path_and_without(
    otel_sdk: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, exporter = otel_sdk
    assert telemetry.Telemetry(tracer_provider=provider).tracer is not None
    await run_tasks(provider)
    fast = exporter.get_finished_spans()
    exporter.clear()
    monkeypatch.setenv("CADRE_TRACE_FAST_SPANS", "false")
    slow_telemetry = telemetry.Telemetry(tracer_provider=provider)
    slow_telemetry.refresh(force=True)
    assert slow_telemetry._fast_spans is None
    await run_tasks(provider)
    slow = exporter.get_finished_spans()
    assert len(fast) == len(slow) == 9  # per task: the client's send, two steps
    assert trees(fast) == trees(slow)
    assert {type(s).__name__ for s in fast} == {"_Span"}  # the fast path made them
    assert {type(s).__name__ for s in slow} == {"ReadableSpan"}


async def test_a_traceparent_that_is_not_w3c_lower_case_hex_starts_a_new_trace(
    otel_sdk: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = otel_sdk
    sent = RecordingTransport()
    processor = Processor(Step(MemoryStore(), sent, registry=make_registry()))
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    malformed = [
        "00-0x" + good[5:],
        good.upper(),
        good[:10] + "g" + good[11:],
    ]
    with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
        for traceparent in [good, *malformed]:
            await processor.process(_add(traceparent))
    spans = exporter.get_finished_spans()
    assert len(spans) == 4
    assert spans[0].parent is not None and spans[0].context.trace_id == PARENT.trace_id
    for span in spans[1:]:  # not a child of garbage: a trace of its own
        assert span.parent is None and span.context.trace_id != PARENT.trace_id
    for envelope, span in zip(sent.sent, spans, strict=True):  # what each step sent
        assert envelope.traceparent == (
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
            f"{span.context.trace_flags:02x}"
        )


async def test_logs_of_a_step_not_sampled_carry_its_task(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)), shutdown_on_exit=False)
    sent = RecordingTransport()
    processor = Processor(Step(MemoryStore(), sent, registry=make_registry()))
    envelope = _add("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
    seen: list[str] = []

    class Noting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.task_id)  # type: ignore[attr-defined]

    handler = Noting()
    handler.addFilter(telemetry.LogContextFilter())
    log = logging.getLogger("cadre")
    log.addHandler(handler)
    original = Step.__call__

    async def logging_step(self: Step, envelope: Envelope) -> Any:
        logging.getLogger("cadre.test").warning("inside")
        return await original(self, envelope)

    try:
        with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
            Step.__call__ = logging_step  # type: ignore[method-assign]
            await processor.process(envelope)
    finally:
        Step.__call__ = original  # type: ignore[method-assign]
        log.removeHandler(handler)
        provider.shutdown()
    assert seen == [envelope.task_id]
    assert [e.traceparent for e in sent.sent] == [envelope.traceparent]  # carried on


def _add(traceparent: str) -> Envelope:
    task = new_id()
    return Envelope(
        id=new_id(),
        message=Add.message_name,
        version=Add.message_version,
        payload={"amount": 1},
        task_id=task,
        recipient="counter/1",
        reply_to="recorder/1",
        created_at=utcnow(),
        traceparent=traceparent,
    )


def test_the_sdks_own_span_metrics_count_fast_spans_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = TracerProvider(meter_provider=meters, shutdown_on_exit=False)
    tracer = provider.get_tracer("cadre")
    fast = fast_spans(tracer)
    assert fast is not None

    def points() -> dict[str, int]:
        data = reader.get_metrics_data()
        return {
            metric.name: sum(p.value for p in metric.data.data_points)  # type: ignore[attr-defined]
            for rm in (data.resource_metrics if data else [])
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name.startswith("otel.sdk.span.")
        }

    span = tracer.start_span(
        "sdk", context=trace.set_span_in_context(trace.NonRecordingSpan(PARENT))
    )
    by_sdk = points()
    span.end()
    after_sdk = points()
    span = fast.start("fast", SpanKind.CONSUMER, PARENT, {})
    by_both = points()
    span.end()
    after_both = points()
    if not by_sdk:
        pytest.skip("this SDK counts no span metrics of its own")
    # Each counted as started, and as live until it ended.
    assert by_both == {n: 2 * v if "started" in n else v for n, v in by_sdk.items()}
    assert after_both == {n: 2 * v if "started" in n else v for n, v in after_sdk.items()}
    assert set(by_sdk) == {"otel.sdk.span.started", "otel.sdk.span.live"}
    meters.shutdown()


GOOD = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
"""A well-formed traceparent of `PARENT`."""


@pytest.mark.parametrize("direct", [True, False], ids=["context-variable", "api"])
async def test_a_span_started_in_a_step_is_its_child_and_the_context_is_restored_after(
    direct: bool,
    otel_sdk: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A sampled step makes its span current by setting the API's context variable itself
    # (`telemetry._CURRENT`), or through `attach`/`detach` where that is not known.
    provider, exporter = otel_sdk
    if direct:
        assert telemetry._CURRENT is not None  # the API's default runtime context
    else:
        monkeypatch.setattr(telemetry, "_CURRENT", None)
    processor = Processor(Step(MemoryStore(), RecordingTransport(), registry=make_registry()))
    original = Step.__call__
    inside: list[tuple[SpanContext, object]] = []

    async def working_step(self: Step, envelope: Envelope) -> Any:
        inside.append((trace.get_current_span().get_span_context(), baggage.get_baggage("k")))
        with provider.get_tracer("user").start_as_current_span("user work"):
            return await original(self, envelope)

    monkeypatch.setattr(Step, "__call__", working_step)
    token = otel_context.attach(baggage.set_baggage("k", "v"))  # the rest of the context stays
    try:
        with (
            telemetry.installed(telemetry.Telemetry(tracer_provider=provider)),
            provider.get_tracer("user").start_as_current_span("outside") as outside,
        ):
            await processor.process(_add(GOOD))
            assert trace.get_current_span() is outside  # restored
    finally:
        otel_context.detach(token)
    work, step, _ = exporter.get_finished_spans()
    assert step.name == "process test.Add" and step.parent == PARENT
    assert inside == [(step.context, "v")]
    assert work.parent is not None and work.parent.span_id == step.context.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_the_api_span_context_is_the_tuple_read_by_position() -> None:
    assert _span_contexts.LAID_OUT
    parsed = telemetry._remote_parent(GOOD)
    assert parsed == PARENT and type(parsed) is SpanContext
    assert (parsed.is_remote, parsed.is_valid, parsed.trace_state) == (True, True, TraceState())
    assert telemetry._remote_parent("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
    assert telemetry._remote_parent(GOOD[:36] + "0" * 16 + "-01") is None


async def test_span_contexts_are_made_by_the_api_where_it_is_not_that_tuple(
    otel_sdk: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, exporter = otel_sdk
    await run_tasks(provider)
    by_position = exporter.get_finished_spans()
    exporter.clear()
    monkeypatch.setattr(telemetry, "LAID_OUT", False)
    monkeypatch.setattr(_sdk_spans, "LAID_OUT", False)
    assert fast_spans(provider.get_tracer("cadre")) is None  # the SDK's own path, then
    parsed = telemetry._remote_parent(GOOD)
    assert parsed == PARENT and type(parsed) is SpanContext and parsed.is_valid
    await run_tasks(provider)
    by_api = exporter.get_finished_spans()
    assert len(by_position) == len(by_api) == 9
    assert trees(by_position) == trees(by_api)


class Numbering(IdGenerator):
    """Span ids 1, 2, 3...; one trace id."""

    def __init__(self) -> None:
        self.span_ids = iter(range(1, 100))

    def generate_span_id(self) -> int:
        return next(self.span_ids)

    def generate_trace_id(self) -> int:
        return PARENT.trace_id


def test_an_id_generator_of_the_users_makes_the_span_ids() -> None:
    # The SDK's random generator's draw is made inline; any other generator is asked.
    provider = TracerProvider(id_generator=Numbering(), shutdown_on_exit=False)
    tracer = provider.get_tracer("cadre")
    fast = fast_spans(tracer)
    assert fast is not None
    spans = [fast.start("process test.Add", SpanKind.CONSUMER, PARENT, dict(ATTRIBUTES))]
    spans.append(fast.start("send test.Add", SpanKind.PRODUCER, None, dict(ATTRIBUTES)))
    assert [s.get_span_context().span_id for s in spans] == [1, 2]
    assert spans[0].get_span_context().trace_flags == TraceFlags(TraceFlags.SAMPLED)


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (ParentBasedTraceIdRatio(0.5), [True, False, True, False]),
        (ParentBased(ALWAYS_OFF), [False] * 4),
        (ParentBased(TraceIdRatioBased(0.5), remote_parent_sampled=ALWAYS_OFF), [True] * 4),
    ],
    ids=["ratio-0.5", "always-off", "not-known"],
)
def test_a_new_trace_the_sampler_drops_gets_its_traceparent_and_no_span(
    sampler: Sampler, expected: list[bool]
) -> None:
    # `new_trace` answers for a root sampler whose answer is known; where it is not known
    # (a parent-based sampler set up otherwise), it leaves the decision to `start`.
    trace_ids = BOUNDARY_TRACE_IDS
    tracer, fast, exporter = with_trace_ids(sampler, trace_ids)
    undecided = []
    for _ in trace_ids:
        sdk = tracer.start_span("send test.Add", kind=SpanKind.PRODUCER, attributes=ATTRIBUTES)
        sdk.end()
        theirs = sdk.get_span_context()
        trace_id, dropped = fast.new_trace()
        assert trace_id == theirs.trace_id
        undecided.append(dropped is None)
        if dropped is None:
            ours = fast.start("send test.Add", SpanKind.PRODUCER, None, dict(ATTRIBUTES), trace_id)
            ours.end()
            assert ours.get_span_context().trace_flags == theirs.trace_flags
            continue
        assert not theirs.trace_flags.sampled
        assert dropped[:36] == f"00-{theirs.trace_id:032x}-"
        assert dropped[52:] == f"-{theirs.trace_flags:02x}"
        assert int(dropped[36:52], 16) != 0
    assert undecided == expected
    spans = exporter.get_finished_spans()
    for sdk_span, our_span in zip(spans[::2], spans[1::2], strict=True):
        assert exported(our_span) == exported(sdk_span)


def test_a_disabled_tracer_has_no_new_trace() -> None:
    tracer, fast, _ = make()
    tracer._tracer_config.is_enabled = False  # type: ignore[attr-defined]
    assert fast.new_trace() == (None, None)
