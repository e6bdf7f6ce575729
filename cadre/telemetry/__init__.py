"""OpenTelemetry for Cadre: spans, metrics and log correlation, on the OpenTelemetry API only.

Nothing here configures an SDK or an exporter: that happens at the edge
(`cadre.observability.configure`, which every Cadre process calls at start-up, or a user's
own setup). Without an SDK every call below is a no-op, and the hot path skips even
building the attributes.

Spans follow the messaging and GenAI semantic conventions:

    <METHOD> <route>                     SERVER    an HTTP request to the API (`http`); a
                                                   task submitted in it is its child
    send <message> / publish <message>   PRODUCER  a message sent from outside any step (a
                                                   client, `cadre run`); inside a step only
                                                   with CADRE_TRACE_SENDS=true
    process <message>                    CONSUMER  around each step; its context travels in
                                                   every envelope the step sends
    chat <model>                         CLIENT    model calls (`model_span`)
    execute_tool <name>                  INTERNAL  tool calls (`tool_span`)

so one task is one trace, parent to child across every hop and process: the HTTP request
(or the client's send), then each step a child of the step that sent its message. Team
decisions (next speaker and what chose it, awaiting input, cancel, termination) are span
events on the manager's process span. Message payloads, prompts, completions and tool
arguments are recorded only when content capture is on (`CADRE_TRACE_CONTENT=true`).

Sampling is per task: the sampler decides once, at the task's root span, and the decision
rides in the traceparent flags of every envelope. A step whose envelope says "not sampled"
starts no span and builds no attributes (only the task id for log records is set).

A host that runs deliveries inside its own span (Azure Functions:
`cadre.hosts.functions_telemetry`) hands that span over with `host_span`;
`LogContextFilter` puts trace id, span id and task id on log records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._span_contexts import LAID_OUT, SPAN_KEY, context_of, new_tuple

if TYPE_CHECKING:
    from ..envelope import Envelope
    from ._sdk_spans import FastSpans

INSTRUMENTATION = "cadre"
MESSAGING_SYSTEM = "cadre"

# Attribute names (the workbook and the tests read these; keep them in one place).
AGENT_TYPE = "cadre.agent.type"
AGENT_KEY = "cadre.agent.key"
MESSAGE_NAME = "cadre.message.name"
MESSAGE_VERSION = "cadre.message.version"
TASK_ID = "cadre.task.id"
ATTEMPT = "cadre.delivery.attempt"
OUTCOME = "cadre.outcome"
DEAD_LETTER_REASON = "cadre.dead_letter.reason"
TASK_STATUS = "cadre.task.status"
CONTENT = "cadre.message.content"
AGENT_NAME = "gen_ai.agent.name"
TEAM = "cadre.team"
MODEL_DEPLOYMENT = "cadre.model.deployment"

# Span events of team decisions (on the manager's process span).
SPEAKER_SELECTED = "cadre.team.speaker_selected"
TERMINATED = "cadre.team.terminated"
AWAITING_INPUT = "cadre.team.awaiting_input"
CANCELLED = "cadre.team.cancelled"

# Metric names.
PROCESS_DURATION = "messaging.process.duration"
CONSUMED_MESSAGES = "messaging.client.consumed.messages"
SENT_MESSAGES = "messaging.client.sent.messages"
DEAD_LETTERS = "cadre.dead_letters"
STEP_ERRORS = "cadre.step.errors"
TOKEN_USAGE = "gen_ai.client.token.usage"
TASKS = "cadre.tasks"
TASK_DURATION = "cadre.task.duration"
LIMITER_WAIT = "cadre.model.limiter.wait"
QUEUE_DEPTH = "cadre.worker.queue.depth"
STEPS_IN_FLIGHT = "cadre.worker.steps.in_flight"
TIMERS_WAITING = "cadre.worker.timers.waiting"
PARTITION = "cadre.partition"
PARTITION_ACTIVE = "cadre.partition.active"

METRIC_NAMES = frozenset(
    {
        PROCESS_DURATION,
        CONSUMED_MESSAGES,
        SENT_MESSAGES,
        DEAD_LETTERS,
        STEP_ERRORS,
        TOKEN_USAGE,
        TASKS,
        TASK_DURATION,
        LIMITER_WAIT,
    }
)
"""Every metric Cadre emits (the workbook may query only these)."""

ATTRIBUTE_NAMES = frozenset(
    {
        AGENT_TYPE,
        AGENT_KEY,
        MESSAGE_NAME,
        MESSAGE_VERSION,
        TASK_ID,
        ATTEMPT,
        OUTCOME,
        DEAD_LETTER_REASON,
        TASK_STATUS,
        TEAM,
        AGENT_NAME,
        MODEL_DEPLOYMENT,
        "messaging.system",
        "gen_ai.request.model",
        "gen_ai.response.model",
        "gen_ai.token.type",
        "gen_ai.operation.name",
        "gen_ai.system",
    }
)
"""Every attribute Cadre puts on metrics and spans that dashboards may group by."""

_propagator = TraceContextTextMapPropagator()
_ROOT = otel_context.Context()


def _traceparent(ctx: trace.SpanContext) -> str:
    """The W3C traceparent of a span context (what `TraceContextTextMapPropagator` writes)."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


_SAMPLED_LAST = frozenset("13579bdfBDF")
"""The last hex digit of a traceparent's flags when the sampled bit is set."""


def _sampled(traceparent: str | None) -> bool:
    """Whether a traceparent says its trace is sampled (True when there is none, or it is
    not the 55 characters of version 00: the sampler decides then)."""
    return not traceparent or len(traceparent) != 55 or traceparent[54] in _SAMPLED_LAST


_FLAGS = {f"{flags:02x}": trace.TraceFlags(flags) for flags in range(256)}
"""The trace flags of each traceparent flags field (made once, not per message)."""
_FLAG_TEXT = {flags: text for text, flags in _FLAGS.items()}


_NO_TRACE_STATE = trace.DEFAULT_TRACE_STATE

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
"""A version-00 traceparent as W3C writes it (lower-case hex only)."""


def _remote_parent(traceparent: str | None) -> trace.SpanContext | None:
    """The valid span context of a well-formed version-00 traceparent, parsed directly (the
    propagator's general parsing costs several microseconds a message); None for anything
    else (no traceparent, or one the propagator has to judge)."""
    matched = _TRACEPARENT.fullmatch(traceparent) if traceparent else None
    if matched is None:
        return None
    trace_hex, span_hex, flags_hex = matched.groups()
    trace_id, span_id, flags = int(trace_hex, 16), int(span_hex, 16), _FLAGS[flags_hex]
    if not (trace_id and span_id):  # all zeros: invalid
        return None
    if LAID_OUT:
        return new_tuple(trace.SpanContext, (trace_id, span_id, True, flags, _NO_TRACE_STATE, True))
    return trace.SpanContext(trace_id, span_id, True, flags)


_step: ContextVar[_Processing | str | None] = ContextVar("cadre_step", default=None)
"""The step under way in this context: its `_Processing` (its task id, its span, the
traceparent it gives), or, for a step with nothing to record, only its task id (empty when
its messages belong to several tasks)."""
_host_span: ContextVar[trace.SpanContext | None] = ContextVar("cadre_host_span", default=None)
"""The span of the invocation a host runs this delivery in (`host_span`)."""


def _current_context_variable() -> ContextVar[otel_context.Context] | None:
    """The context variable that holds OpenTelemetry's current context, when its runtime
    context is the API's own (one context variable; another one may be configured with
    OTEL_PYTHON_CONTEXT): a sampled step sets and resets it directly, which costs a
    fraction of `attach` and `detach` (they reach it through three calls). None
    otherwise: the step uses the API."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ != "ContextVarsRuntimeContext" or not isinstance(
        variable, ContextVar
    ):
        return None
    return variable


_CURRENT = _current_context_variable()


def _unsampled_step() -> bool:
    """Whether this runs inside a step that records no span (its task is not sampled)."""
    step = _step.get()
    return step is not None and (isinstance(step, str) or step.span is None)


@contextlib.contextmanager
def host_span(span_context: trace.SpanContext) -> Iterator[otel_context.Context]:
    """Inside the block the host's span (`span_context`, e.g. an Azure Functions
    invocation's) is the current span: a task submitted inside is its child, and a
    delivery's process span nests under it when it continued the message's trace (a host
    span of another trace only gets a link: a task stays one trace)."""
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context), _ROOT)
    host_token = _host_span.set(span_context)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)
        _host_span.reset(host_token)


def _process_parent(
    traceparent: str | None, parsed: trace.SpanContext | None
) -> tuple[trace.SpanContext | None, list[trace.Link] | None]:
    """The parent of a process span: the step (or client) in the envelope (`parsed`:
    its traceparent as `_remote_parent` read it, or None; the propagator judges any other
    traceparent); or, under a host that continued that trace (Functions reads the message's
    Diagnostic-Id), the host's span, so it sits between. A host span of another trace only
    gets a link.

    Returns the parent's span context (None: the span starts a new trace) and the links."""
    parent = parsed
    if parent is None and traceparent:
        extracted = _propagator.extract({"traceparent": traceparent})
        span_context = trace.get_current_span(extracted).get_span_context()
        parent = span_context if span_context.is_valid else None
    host = _host_span.get()
    if host is None or not host.is_valid:
        return parent, None
    if parent is None or parent.trace_id == host.trace_id:
        return host, None
    return parent, [trace.Link(host)]


_DISABLED_PROVIDERS = {
    "ProxyTracerProvider",
    "NoOpTracerProvider",
    "_ProxyMeterProvider",
    "ProxyMeterProvider",
    "NoOpMeterProvider",
}

PROVIDER_CHECK_SECONDS = 1.0
"""How often the global providers are looked up again (an SDK set up later is picked up
within this time, or at once after `refresh(force=True)`)."""


def _fast_spans(tracer: trace.Tracer | None) -> FastSpans | None:
    """The fast start of Cadre's per-message spans (`_sdk_spans`) when `tracer` is the
    OpenTelemetry SDK's and CADRE_TRACE_FAST_SPANS is not false; None otherwise."""
    if tracer is None or type(tracer).__module__ != "opentelemetry.sdk.trace":
        return None
    if not _flag("CADRE_TRACE_FAST_SPANS", True):
        return None
    from ._sdk_spans import fast_spans

    return fast_spans(tracer)


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    return default if not raw else raw in {"1", "true", "yes", "on"}


def _disabled_provider(provider: object) -> bool:
    # The API's defaults, until an SDK installs a real provider.
    return type(provider).__name__ in _DISABLED_PROVIDERS


@dataclass
class _Instruments:
    process_duration: metrics.Histogram
    consumed: metrics.Counter
    sent: metrics.Counter
    dead_letters: metrics.Counter
    step_errors: metrics.Counter
    token_usage: metrics.Histogram
    tasks: metrics.Counter
    task_duration: metrics.Histogram
    limiter_wait: metrics.Histogram
    queue_depth: metrics._Gauge  # the API's (only) name for a synchronous gauge
    in_flight: metrics._Gauge
    timers_waiting: metrics._Gauge


class Telemetry:
    """The tracer, the meter and Cadre's instruments, from given or global providers.

    With no providers given it follows the global ones, and notices when an SDK installs
    them after this object was made (e.g. `configure_azure_monitor` at start-up).
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
        trace_sends: bool | None = None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.capture_content = (
            capture_content if capture_content is not None else _flag("CADRE_TRACE_CONTENT", False)
        )
        self.trace_sends = (
            trace_sends if trace_sends is not None else _flag("CADRE_TRACE_SENDS", False)
        )
        """True: a message sent inside a step gets a send span of its own, child of the
        step's span. False (the default): it carries the step's process span as its
        parent (one span per message, still one tree)."""
        self._seen_tracer_provider: object = None
        self._seen_meter_provider: object = None
        self._tracer: trace.Tracer | None = None
        self._fast_spans: FastSpans | None = None
        self._instruments: _Instruments | None = None
        self.tracing = False
        self.measuring = False
        self._follows_globals = tracer_provider is None or meter_provider is None
        self._next_check = 0.0

    def refresh(self, *, force: bool = False) -> None:
        """Pick up the current providers: given ones once, global ones at most every
        `PROVIDER_CHECK_SECONDS` (the hot path calls this on every step)."""
        now = time.monotonic()
        if now < self._next_check and not force:
            return
        self._next_check = now + PROVIDER_CHECK_SECONDS if self._follows_globals else float("inf")
        tp = self._tracer_provider or trace.get_tracer_provider()
        if tp is not self._seen_tracer_provider:
            self._seen_tracer_provider = tp
            self.tracing = not _disabled_provider(tp)
            self._tracer = tp.get_tracer(INSTRUMENTATION) if self.tracing else None
            self._fast_spans = _fast_spans(self._tracer)
        mp = self._meter_provider or metrics.get_meter_provider()
        if mp is not self._seen_meter_provider:
            self._seen_meter_provider = mp
            self.measuring = not _disabled_provider(mp)
            self._instruments = _make_instruments(mp.get_meter(INSTRUMENTATION))

    @property
    def tracer(self) -> trace.Tracer:
        """The tracer (a no-op one while tracing is off)."""
        self.refresh()
        return self._tracer or trace.NoOpTracer()

    @property
    def instruments(self) -> _Instruments:
        """Cadre's metric instruments."""
        self.refresh()
        assert self._instruments is not None
        return self._instruments

    # -- producing ------------------------------------------------------------------

    def producer_traceparent(
        self,
        operation: str,
        message: str,
        destination: str,
        *,
        task_id: str,
        envelope_id: str,
        payload: Mapping[str, Any] | None = None,
    ) -> str | None:
        """The W3C traceparent for the envelopes of a message being sent.

        Inside a step: the step's span's (with `trace_sends`, a `send`/`publish` PRODUCER
        span of its own, child of the step's). Outside any step, under a current span (an
        HTTP request's, a host's): that span's, or a PRODUCER span under it with
        `trace_sends`; with no current span, a PRODUCER span (ended at once: the message is
        created) that starts the task's trace, where the sampler decides for the task.

        None when tracing is off or the step's task is not sampled: the caller keeps the
        incoming traceparent, so a trace (and its sampling decision) flows through.
        """
        step = _step.get()
        # Inside a step the processor refreshed at its start: a plain send needs nothing more.
        if step is None or self.measuring or self.trace_sends:
            self.refresh()
            if self.measuring:
                sent = {MESSAGE_NAME: message, "messaging.system": "cadre"}
                self.instruments.sent.add(1, sent)
            if not self.tracing:
                return None
        root = False  # whether the span starts a new trace
        if step is not None:
            if isinstance(step, str) or step.span is None:
                return None  # tracing off, or a task not sampled: the incoming one goes on
            if not self.trace_sends:  # the step's span is the parent
                return step.traceparent()
        else:
            current = trace.get_current_span().get_span_context()
            if current.is_valid and (not current.trace_flags.sampled or not self.trace_sends):
                # An HTTP request's span, or a task not sampled: no span of its own.
                return _traceparent(current)
            root = not current.is_valid
        assert self._tracer is not None
        trace_id = None
        if root and self._fast_spans is not None:
            trace_id, dropped = self._fast_spans.new_trace()
            if dropped is not None:  # a task not sampled: no span, no attributes
                return dropped
        attributes: dict[str, Any] = {
            "messaging.system": MESSAGING_SYSTEM,
            "messaging.operation.type": operation,
            # The agent type (or topic type): low cardinality, as the conventions ask.
            "messaging.destination.name": destination.partition("/")[0],
            "messaging.message.id": envelope_id,
            "messaging.message.conversation_id": task_id,
            MESSAGE_NAME: message,
        }
        if self.capture_content and payload is not None:
            attributes[CONTENT] = _json(payload)
        name = f"{operation} {message}"
        if self._fast_spans is not None and root:
            span = self._fast_spans.start(name, SpanKind.PRODUCER, None, attributes, trace_id)
        else:
            span = self._tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
        span.end()
        return _traceparent(span.get_span_context())

    # -- consuming ------------------------------------------------------------------

    def processing(self, envelope: Envelope) -> _Processing:
        """Around one step (``with tel.processing(envelope) as scope``): a CONSUMER span child
        of the step (or client) that sent the envelope, unless its task is not sampled; the
        task id for log records; and the step's metrics once the outcome is known (set
        ``scope.outcome``, ``scope.reason``, ``scope.error``). For a step with nothing to
        record, `enter_quiet` is cheaper. The caller has called `refresh` (the processor
        does, once per delivery)."""
        return _Processing(self, envelope, self.tracing and _sampled(envelope.traceparent))

    def enter_quiet(self, envelope: Envelope) -> Token[_Processing | str | None] | None:
        """For a step over `envelope` with nothing to record (metrics off, and tracing off
        or its task not sampled), the cheapest scope: mark this context as inside a step of
        the envelope's task, for log records and for the messages it sends (they keep its
        traceparent); `leave_quiet(token)` ends it. None when there is something to
        record: then use `processing`. The caller has called `refresh`."""
        if self.measuring or (self.tracing and _sampled(envelope.traceparent)):
            return None
        return _step.set(envelope.task_id)

    def enter_quiet_many(
        self, envelopes: Sequence[Envelope]
    ) -> Token[_Processing | str | None] | None:
        """`enter_quiet` for one step over several envelopes (`Step.run_many`): None when
        there is something to record (metrics on, or one of their tasks sampled: each
        message then goes through `processing` on its own). Log records get the task id
        when the envelopes share one. The caller has called `refresh`."""
        if self.measuring:
            return None
        if self.tracing and any(_sampled(e.traceparent) for e in envelopes):
            return None
        task_ids = {e.task_id for e in envelopes}
        return _step.set(task_ids.pop() if len(task_ids) == 1 else "")

    def _start_process_span(self, envelope: Envelope) -> tuple[trace.Span, str | None]:
        """The step's span, and, when its trace is the one the envelope's traceparent names
        (well-formed, lower case), that traceparent's first 36 characters: they begin the
        step's own."""
        assert self._tracer is not None
        traceparent = envelope.traceparent
        parent = _remote_parent(traceparent)
        prefix = traceparent[:36] if parent is not None else None  # type: ignore[index]
        links = None
        if parent is None or _host_span.get() is not None:
            parent, links = _process_parent(traceparent, parent)
        agent_type, _, key = (envelope.recipient or "").partition("/")
        # The fewest attributes that find a step (each costs the SDK about 3 µs): the
        # message name is in the span's name; the message id, the attempt and the outcome
        # are added when a step does not end `handled` (`_Processing.__exit__`), the
        # version when it is not 1.
        attributes: dict[str, Any] = {
            AGENT_TYPE: agent_type,
            AGENT_KEY: key,
            "messaging.message.conversation_id": envelope.task_id,
        }
        if envelope.version != 1:
            attributes[MESSAGE_VERSION] = envelope.version
        if self.capture_content:
            attributes[CONTENT] = _json(envelope.payload)
        name = _process_name(envelope.message)
        if self._fast_spans is not None and parent is not None and links is None:
            span = self._fast_spans.start(name, SpanKind.CONSUMER, parent, attributes)
        else:
            span = self._tracer.start_span(
                name,
                context=context_of(parent) if parent is not None else _ROOT,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
            )
        return span, prefix

    # -- models, tools, tasks -------------------------------------------------------

    @contextlib.contextmanager
    def model_span(
        self,
        model: str,
        *,
        agent_type: str | None = None,
        agent_name: str | None = None,
        provider: str = "openai",
    ) -> Iterator[trace.Span]:
        """A `chat <model>` CLIENT span, current inside the block; call `record_tokens`
        with the usage inside it. An exception marks it failed (``error.type``). Inside a
        step whose task is not sampled it is not made."""
        self.refresh()
        if not self.tracing or _unsampled_step():
            yield trace.INVALID_SPAN
            return
        assert self._tracer is not None
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.system": provider,
            "gen_ai.provider.name": provider,
        }
        if agent_type:
            attributes[AGENT_TYPE] = agent_type
        if agent_name:
            attributes[AGENT_NAME] = agent_name
        with self._tracer.start_as_current_span(
            f"chat {model}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise

    def record_tokens(
        self,
        span: trace.Span | None,
        *,
        model: str,
        input_tokens: int,
        output_tokens: int,
        agent_type: str | None = None,
        agent_name: str | None = None,
        provider: str = "openai",
        response_model: str | None = None,
    ) -> None:
        """Token usage of one model call: on its span and in `gen_ai.client.token.usage`
        (per agent type, agent name and model)."""
        if span is not None and span.is_recording():
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        self.refresh()
        if not self.measuring:
            return
        usage = self.instruments.token_usage
        base: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.system": provider,
        }
        if response_model:
            base["gen_ai.response.model"] = response_model
        if agent_type:
            base[AGENT_TYPE] = agent_type
        if agent_name:
            base[AGENT_NAME] = agent_name
        usage.record(input_tokens, {**base, "gen_ai.token.type": "input"})
        usage.record(output_tokens, {**base, "gen_ai.token.type": "output"})

    def record_limiter_wait(self, seconds: float, deployment: str) -> None:
        """A model call waited `seconds` for its deployment's limiter (`cadre.models.limits`):
        a data point of `cadre.model.limiter.wait`, per deployment."""
        self.refresh()
        if self.measuring:
            self.instruments.limiter_wait.record(seconds, {MODEL_DEPLOYMENT: deployment})

    def record_worker_status(
        self, partitions: Mapping[int, tuple[int, bool]], in_flight: int, timers: int
    ) -> None:
        """A worker's gauges: per partition the messages waiting in its queue and whether
        this worker is its active consumer; the steps it runs; the timers waiting."""
        self.refresh()
        if not self.measuring:
            return
        inst = self.instruments
        for partition, (ready, active) in partitions.items():
            inst.queue_depth.set(ready, {PARTITION: partition, PARTITION_ACTIVE: active})
        inst.in_flight.set(in_flight)
        inst.timers_waiting.set(timers)

    @contextlib.contextmanager
    def tool_span(
        self, name: str, *, call_id: str | None = None, agent_name: str | None = None
    ) -> Iterator[trace.Span]:
        """An `execute_tool <name>` span around one tool call, current inside the block
        (not made inside a step whose task is not sampled)."""
        self.refresh()
        if not self.tracing or _unsampled_step():
            yield trace.INVALID_SPAN
            return
        assert self._tracer is not None
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name}
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        if agent_name:
            attributes[AGENT_NAME] = agent_name
        with self._tracer.start_as_current_span(
            f"execute_tool {name}", kind=SpanKind.INTERNAL, attributes=attributes
        ) as span:
            yield span

    def event(self, name: str, attributes: Mapping[str, Any]) -> None:
        """A span event on the current span (team decisions: next speaker, termination).
        None values are left out."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, {k: v for k, v in attributes.items() if v is not None})

    def count_unreadable(self, reason: str) -> None:
        """Bytes that are not an envelope were dead-lettered (no step, so no span)."""
        self.refresh()
        if self.measuring:
            attributes = {AGENT_TYPE: "", OUTCOME: "dead_lettered", "messaging.system": "cadre"}
            self.instruments.consumed.add(1, {**attributes, MESSAGE_NAME: ""})
            self.instruments.dead_letters.add(1, {AGENT_TYPE: "", DEAD_LETTER_REASON: reason})

    def record_task(self, status: str, duration_seconds: float, team: str | None = None) -> None:
        """A task reached a final status: count it and its duration."""
        attributes: dict[str, Any] = {TASK_STATUS: status}
        if team:
            attributes["cadre.team"] = team
        self.instruments.tasks.add(1, attributes)
        self.instruments.task_duration.record(duration_seconds, attributes)


_names: dict[str, str] = {}


def _process_name(message: str) -> str:
    """``process <message>``, made once per message name."""
    name = _names.get(message)
    if name is None:
        name = _names[message] = f"process {message}" if len(_names) < 4096 else message
    return name


class _Processing:
    """One step's telemetry: the context manager `Telemetry.processing` returns and the scope
    the processor reports the outcome on (a class, not a generator: it runs on the hot
    path). `span` is None when tracing is off or the task is not sampled."""

    __slots__ = (
        "_prefix",
        "_sampled",
        "_started",
        "_step_token",
        "_token",
        "_traceparent",
        "envelope",
        "error",
        "outcome",
        "reason",
        "span",
        "task_id",
        "telemetry",
    )

    def __init__(self, telemetry: Telemetry, envelope: Envelope, sampled: bool) -> None:
        self.telemetry = telemetry
        self.envelope = envelope
        self.task_id = envelope.task_id
        self.outcome = "handled"
        self.reason: str | None = None
        self.error: str | None = None
        self.span: trace.Span | None = None
        self._sampled = sampled
        self._prefix: str | None = None
        self._token: object = None
        self._traceparent: str | None = None
        self._started = time.perf_counter() if telemetry.measuring else 0.0

    def traceparent(self) -> str:
        """The W3C traceparent of this step's span (made once). When its trace is the
        incoming traceparent's, only the span id and the flags are formatted."""
        traceparent = self._traceparent
        if traceparent is None:
            assert self.span is not None
            ctx = self.span.get_span_context()
            flags = _FLAG_TEXT.get(ctx.trace_flags)
            if self._prefix and flags:
                traceparent = f"{self._prefix}{ctx.span_id:016x}-{flags}"
            else:
                traceparent = _traceparent(ctx)
            self._traceparent = traceparent
        return traceparent

    def __enter__(self) -> _Processing:
        self._step_token = _step.set(self)
        if self._sampled:
            span, self._prefix = self.telemetry._start_process_span(self.envelope)
            self.span = span
            if _CURRENT is not None:  # the step's span becomes the current one
                self._token = _CURRENT.set(otel_context.Context({**_CURRENT.get(), SPAN_KEY: span}))
            else:
                self._token = otel_context.attach(trace.set_span_in_context(span))
        return self

    def __exit__(self, *exc_info: object) -> None:
        token = self._token
        if token is not None:
            if _CURRENT is not None:
                _CURRENT.reset(token)  # type: ignore[arg-type]
            else:
                otel_context.detach(token)  # type: ignore[arg-type]
        _step.reset(self._step_token)
        span = self.span
        if span is not None:
            if self.outcome != "handled":
                span.set_attributes(
                    {
                        OUTCOME: self.outcome,
                        "messaging.message.id": self.envelope.id,
                        ATTEMPT: self.envelope.attempt,
                    }
                )
            if self.reason:
                span.set_attribute(DEAD_LETTER_REASON, self.reason)
            if self.error:
                span.set_status(Status(StatusCode.ERROR, self.error[:500]))
            span.end()
        if self.telemetry.measuring:
            self._measure()

    def _measure(self) -> None:
        """The step's metrics: duration, count by outcome, dead letters, errors."""
        agent_type = (self.envelope.recipient or "").partition("/")[0]
        attributes = {
            AGENT_TYPE: agent_type,
            MESSAGE_NAME: self.envelope.message,
            OUTCOME: self.outcome,
            "messaging.system": MESSAGING_SYSTEM,
        }
        inst = self.telemetry.instruments
        inst.process_duration.record(time.perf_counter() - self._started, attributes)
        inst.consumed.add(1, attributes)
        if self.outcome == "dead_lettered":
            inst.dead_letters.add(1, {AGENT_TYPE: agent_type, DEAD_LETTER_REASON: self.reason})
        if self.error:
            inst.step_errors.add(1, {AGENT_TYPE: agent_type, OUTCOME: self.outcome})


leave_quiet = _step.reset
"""End the scope `Telemetry.enter_quiet` or `enter_quiet_many` began (``leave_quiet(token)``;
the context variable's own method: no Python call on the hot path)."""


ProcessScope = _Processing
"""What one step reports: its outcome (set by the processor) and its duration."""


def _make_instruments(meter: metrics.Meter) -> _Instruments:
    return _Instruments(
        process_duration=meter.create_histogram(
            PROCESS_DURATION, unit="s", description="Duration of one agent step"
        ),
        consumed=meter.create_counter(
            CONSUMED_MESSAGES, unit="{message}", description="Messages processed, by outcome"
        ),
        sent=meter.create_counter(SENT_MESSAGES, unit="{message}", description="Messages sent"),
        dead_letters=meter.create_counter(
            DEAD_LETTERS, unit="{message}", description="Messages dead-lettered, by reason"
        ),
        step_errors=meter.create_counter(
            STEP_ERRORS, unit="{error}", description="Steps whose handler or store failed"
        ),
        token_usage=meter.create_histogram(
            TOKEN_USAGE, unit="{token}", description="Tokens used by model calls"
        ),
        tasks=meter.create_counter(TASKS, unit="{task}", description="Tasks by final status"),
        task_duration=meter.create_histogram(
            TASK_DURATION, unit="s", description="Time from submit to final status"
        ),
        limiter_wait=meter.create_histogram(
            LIMITER_WAIT,
            unit="s",
            description="Time model calls waited for their deployment's quota",
        ),
        queue_depth=meter.create_gauge(
            QUEUE_DEPTH,
            unit="{message}",
            description="Messages waiting in a partition queue (the lag), as a worker sees it",
        ),
        in_flight=meter.create_gauge(
            STEPS_IN_FLIGHT, unit="{step}", description="Steps a worker is running"
        ),
        timers_waiting=meter.create_gauge(
            TIMERS_WAITING,
            unit="{message}",
            description="Timers waiting in the delay queues a worker declared",
        ),
    )


def _json(payload: Mapping[str, Any]) -> str:
    import json

    return json.dumps(payload, separators=(",", ":"), default=str)[:8192]


class LogContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``task_id`` to every log record (empty outside a
    step), so logs inside a step join its trace. Install it on a handler:
    ``handler.addFilter(LogContextFilter())``; `cadre.observability.configure` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = f"{ctx.trace_id:032x}" if ctx.is_valid else ""
        record.span_id = f"{ctx.span_id:016x}" if ctx.is_valid else ""
        if not getattr(record, "task_id", None):
            step = _step.get()
            record.task_id = step if isinstance(step, str) else step.task_id if step else ""
        return True


_current = Telemetry()


def current() -> Telemetry:
    """The telemetry hosts use (follows the global OpenTelemetry providers)."""
    return _current


@contextlib.contextmanager
def installed(telemetry: Telemetry) -> Iterator[Telemetry]:
    """Use `telemetry` instead of the global one inside the block (tests, benchmarks)."""
    global _current
    previous, _current = _current, telemetry
    try:
        yield telemetry
    finally:
        _current = previous
