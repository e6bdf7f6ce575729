"""Cadre's per-message spans, started without the SDK's general path when the tracer is the
OpenTelemetry SDK's own.

Cadre makes one span for every message (the step's process span, and the producer span that
starts a task's trace), so that span's cost is tracing's cost. `Tracer.start_span` is general:
it looks the parent up in a context, handles links and disabled tracers, cleans every
attribute value, builds the span through a long constructor with lists for events and links,
and its `end` copies the span for the processors. Cadre's case is narrow: the parent is a
span context (the envelope's) or there is none (a new trace), there are no links, and the
attribute values are strings and integers Cadre made. For that case `FastSpans.start` does
what `start_span` does, in fewer steps, and the span it returns is the SDK's:

- the tracer's sampler decides, with the same arguments. Where the SDK's parent-based
  sampler's answer is known it is not asked: for a sampled remote parent (record and
  sample, with the parent's trace state), and for a new trace when its root sampler is the
  SDK's trace-id ratio, always on or always off (the trace id's low 64 bits against the
  ratio's bound);
- the tracer's id generator makes the ids (the SDK's random one's draw is made here, as it
  makes it); the flags follow the SDK's rules. A new trace that the sampler's known answer
  drops gets no span at all: `new_trace` gives the traceparent of the SDK's non-recording
  span for it;
- span contexts are made with ``tuple.__new__`` and read by position (`_span_contexts`);
- the span is an instance of the SDK's `Span` class with every field its constructor sets
  (copied from a template the SDK's constructor made; the per-span ones set afresh), except
  that its lists of events and of links are made when first used;
- the attributes go into the SDK's `BoundedAttributes` as they are when the span limits
  cannot cut them, and through its cleaning otherwise (or when the sampler added some);
- the processors' `on_start` runs (unless every processor's is the SDK's empty one), the
  SDK's internal span metrics count the span, and `end` is the SDK's own `Span.end`: the
  processors get the ended span itself, which no setter can change any more, where the SDK
  would hand them a copy.

A tracer that is not the SDK's, an SDK whose `Span` has fields this module does not know or
whose tracer's processor is not its multi-processor, or an API whose `SpanContext` is not
the tuple `_span_contexts` describes, gets None from `fast_spans`, and the caller uses
`Tracer.start_span`.

This module imports the SDK; `cadre.telemetry` imports it only once an SDK tracer is in use.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Mapping
from time import time_ns
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import export, sampling
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList

from ._span_contexts import LAID_OUT, SPAN_ID_MAX, context_of, new_tuple

_TRACER_FIELDS = {
    "_sampler": "sampler",
    "_resource": "resource",
    "_span_processor": "span_processor",
    "_limits": "_span_limits",
    "_instrumentation_scope": "_instrumentation_scope",
}
"""The span's fields that come from the tracer (span field: tracer attribute). A provider may
change them later (e.g. its resource), so the template follows the tracer."""

_PER_SPAN_FIELDS = frozenset(
    {
        "_name",
        "_kind",
        "_context",
        "_parent",
        "_attributes",
        "_events",
        "_links",
        "_lock",
        "_start_time",
        "_record_end_metrics",
    }
)
"""The span's fields set afresh for each span (events and links: when first used)."""

_CONSTANT_FIELDS = frozenset(
    {
        "_instrumentation_info",
        "_trace_config",
        "_record_exception",
        "_set_status_on_exception",
        "_end_time",
        "_status",
    }
)
"""The span's fields that are the same for every span this module starts."""

_ATTRIBUTES_FIELDS = frozenset(
    {"_dict", "maxlen", "dropped", "max_value_len", "_lock", "_immutable", "_extended_attributes"}
)
"""The fields of the SDK's `BoundedAttributes` (a new one's: `_dict` and `_lock` are its
own; the others come from its limits)."""

_EMPTY_ON_START = {
    sdk_trace.SpanProcessor.on_start,
    export.SimpleSpanProcessor.on_start,
    export.BatchSpanProcessor.on_start,
}
"""`on_start` methods that do nothing (the SDK's own processors')."""


class _Span(sdk_trace._Span):
    """The SDK's span, whose lists of events and of links are made when first used (most
    of Cadre's spans get neither); until then `__getattr__` answers for them."""

    def __getattr__(self, name: str) -> Any:
        if name == "_events":
            made = self.__dict__[name] = BoundedList(self._limits.max_events)
        elif name == "_links":
            made = self.__dict__[name] = BoundedList(self._limits.max_links)
        else:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return made

    def _readable_span(self) -> sdk_trace.ReadableSpan:
        # What `end` hands the processors. The SDK's copies the span; an ended span changes
        # no more (every setter checks), so it is its own copy. No event or link can be
        # added now, so lists not made are empty ones.
        fields = self.__dict__
        fields.setdefault("_events", ())
        fields.setdefault("_links", ())
        return self


class FastSpans:
    """Starts Cadre's per-message spans for one SDK tracer (see the module docstring)."""

    def __init__(self, tracer: sdk_trace.Tracer) -> None:
        self._tracer = tracer
        template = sdk_trace._Span(
            name="",
            context=trace.INVALID_SPAN_CONTEXT,
            sampler=tracer.sampler,
            resource=tracer.resource,
            span_processor=tracer.span_processor,
            instrumentation_info=tracer.instrumentation_info,
            limits=tracer._span_limits,
            instrumentation_scope=tracer._instrumentation_scope,
        )
        if not LAID_OUT:
            raise TypeError("the API's SpanContext is not the tuple this module expects")
        if not hasattr(tracer.span_processor, "_span_processors"):
            raise TypeError("the tracer's span processor is not the SDK's multi-processor")
        fields = vars(template)
        unknown = set(fields) - _CONSTANT_FIELDS - _PER_SPAN_FIELDS - set(_TRACER_FIELDS)
        if unknown:
            raise TypeError(f"the SDK's Span has fields this module does not know: {unknown}")
        if set(vars(template._attributes)) - _ATTRIBUTES_FIELDS:
            raise TypeError("the SDK's BoundedAttributes has fields this module does not know")
        self._constant = {name: fields[name] for name in _CONSTANT_FIELDS if name in fields}
        self._template: dict[str, Any] = {}
        self._attributes_template: dict[str, Any] = {}
        self._configuration: tuple[Any, ...] = (None,) * 5
        """The tracer's sampler, resource, processor, its processors and its limits, as
        `_configure` last saw them (compared on every span: `_follow`)."""
        self._follows_parents = False
        self._root_bound: int | None = None
        """For the SDK's parent-based sampler with a root sampler whose answer is known: a
        new trace is sampled when its id's low 64 bits are below this."""
        self._plain_start = False
        self._has_config = hasattr(tracer, "_tracer_config")
        metrics = getattr(tracer, "_tracer_metrics", None)
        self._metrics = None if type(metrics).__name__ == "NoOpTracerMetrics" else metrics
        """The SDK's internal span metrics, unless they are off (its no-op ones)."""
        self._random_flag = getattr(trace.TraceFlags, "RANDOM_TRACE_ID", 0)
        self._flags = {
            (sampled, random_id): trace.TraceFlags(
                (trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)
                | (self._random_flag if random_id else 0)
            )
            for sampled in (False, True)
            for random_id in (False, True)
        }
        self._child_flags = {
            random_flag: self._flags[(True, bool(random_flag))]
            for random_flag in {0, self._random_flag}
        }
        """The flags of a child of a sampled parent, by the parent's random-trace-id flag."""
        self._random_ids = type(tracer.id_generator) is RandomIdGenerator
        """Whether the tracer's id generator is the SDK's random one (its span ids are drawn
        here, as it draws them)."""
        self._kept_as_they_are = -1
        """Up to how many of Cadre's attributes the span limits keep as they are (-1: the
        limits may cut any, as with a value length limit)."""

    def new_trace(self) -> tuple[int | None, str | None]:
        """A new trace, for a root span about to start: its trace id (None when the
        tracer is disabled) and, when the sampler's answer is known and is to drop it,
        the traceparent of the SDK's non-recording span for it, made without that span
        or its attributes (None otherwise: pass the trace id to `start`). The ids are
        drawn in the SDK's order, trace id then span id."""
        tracer = self._tracer
        if self._has_config and not tracer._tracer_config.is_enabled:
            return None, None
        self._follow(tracer)
        trace_id = tracer.id_generator.generate_trace_id()
        bound = self._root_bound
        if bound is None or self._metrics or trace_id & _TRACE_ID_LIMIT < bound:
            return trace_id, None
        random_id = getattr(tracer.id_generator, "is_trace_id_random", bool)()
        span_id = self._span_id()
        flags = self._flags[(False, random_id)]
        return trace_id, f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"

    def start(
        self,
        name: str,
        kind: trace.SpanKind,
        parent: trace.SpanContext | None,
        attributes: dict[str, Any],
        trace_id: int | None = None,
    ) -> trace.Span:
        """What ``tracer.start_span(name, context, kind, attributes)`` returns when
        `context` holds only the span context `parent` (valid), or, with `parent` None,
        for the current context, whose span is not valid (a new trace: of `trace_id`
        from `new_trace`, or of one drawn here). `attributes` holds strings and
        integers."""
        tracer = self._tracer
        if self._has_config and not tracer._tracer_config.is_enabled:
            return trace.NonRecordingSpan(parent or trace.INVALID_SPAN_CONTEXT)
        self._follow(tracer)
        # Span contexts are read by position (`_span_contexts`): trace id, span id,
        # remote, flags, trace state.
        if parent is not None and parent[3] & _SAMPLED and parent[2] and self._follows_parents:
            # A child of a sampled remote parent: the parent-based sampler records and
            # samples it, with the attributes it was given and the parent's trace state.
            span_id = self._span_id()
            span_context = new_tuple(
                trace.SpanContext,
                (
                    parent[0],
                    span_id,
                    False,
                    self._child_flags[parent[3] & self._random_flag],
                    parent[4],
                    0 < span_id <= SPAN_ID_MAX,
                ),
            )
            metrics = self._metrics
            return self._recording(
                name,
                kind,
                span_context,
                parent,
                self._attributes(attributes, attributes),
                metrics.start_span(parent, _RECORD_AND_SAMPLE) if metrics else None,
            )
        return self._decide(name, kind, parent, attributes, trace_id)

    def _span_id(self) -> int:
        """A new span id from the tracer's id generator (the SDK's random one's draw made
        here, as it makes it)."""
        if not self._random_ids:
            return self._tracer.id_generator.generate_span_id()
        span_id = random.getrandbits(64)
        while not span_id:
            span_id = random.getrandbits(64)
        return span_id

    def _follow(self, tracer: sdk_trace.Tracer) -> None:
        """Follow the tracer's sampler, resource, processors and limits (compared as one
        tuple: the same objects, as a rule, so each comparison is one of identity)."""
        processor = tracer.span_processor
        configuration = (
            tracer.sampler,
            tracer.resource,
            processor,
            processor._span_processors,
            tracer._span_limits,
        )
        if configuration != self._configuration:
            self._configure(configuration)

    def _decide(
        self,
        name: str,
        kind: trace.SpanKind,
        parent: trace.SpanContext | None,
        attributes: dict[str, Any],
        trace_id: int | None,
    ) -> trace.Span:
        """`start` for a new trace, or a parent whose sampling decision is not known: the
        sampler is asked, unless it is the SDK's parent-based one over a root sampler whose
        answer is known."""
        tracer = self._tracer
        context: otel_context.Context | None = None
        if parent is not None:
            context = context_of(parent)
            trace_id = parent[0]
            random_id = bool(parent[3] & self._random_flag)
        else:
            if trace_id is None:
                trace_id = tracer.id_generator.generate_trace_id()
            random_id = getattr(tracer.id_generator, "is_trace_id_random", bool)()
        trace_state: trace.TraceState | None
        sampler_attributes: Mapping[str, Any]
        if parent is None and self._root_bound is not None:
            # A new trace: the parent-based sampler asks its root sampler, whose answer
            # (a ratio of the trace id, or always, or never) is known.
            is_sampled = recording = trace_id & _TRACE_ID_LIMIT < self._root_bound
            if is_sampled:
                decision, sampler_attributes = _RECORD_AND_SAMPLE, attributes
            else:
                decision, sampler_attributes = sampling.Decision.DROP, {}
            trace_state = None
        else:
            sampled = tracer.sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision, trace_state = sampled.decision, sampled.trace_state
            is_sampled = decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = decision.is_recording()  # type: ignore[no-untyped-call]
            sampler_attributes = sampled.attributes
        span_context = trace.SpanContext(
            trace_id,
            self._span_id(),
            False,
            self._flags[(is_sampled, random_id)],
            trace_state,
        )
        metrics = self._metrics
        record_end_metrics = metrics.start_span(parent, decision) if metrics else None
        if not recording:
            return trace.NonRecordingSpan(span_context)
        return self._recording(
            name,
            kind,
            span_context,
            parent,
            self._attributes(attributes, sampler_attributes),
            record_end_metrics,
            context,
        )

    def _recording(
        self,
        name: str,
        kind: trace.SpanKind,
        span_context: trace.SpanContext,
        parent: trace.SpanContext | None,
        attributes: BoundedAttributes,
        record_end_metrics: Any,
        context: otel_context.Context | None = None,
    ) -> trace.Span:
        """The SDK's span, started: made from the template, then announced to the
        processors whose `on_start` does something (with the parent's context, made here
        for a child of a sampled remote parent when one needs it)."""
        span: sdk_trace.Span = object.__new__(_Span)
        span.__dict__ = {
            **self._template,
            "_name": name,
            "_kind": kind,
            "_context": span_context,
            "_parent": parent,
            "_attributes": attributes,
            "_lock": threading.Lock(),
            "_record_end_metrics": record_end_metrics,
            "_start_time": time_ns(),
        }
        if not self._plain_start:
            if context is None and parent is not None:
                context = context_of(parent)
            self._tracer.span_processor.on_start(span, parent_context=context)
        return span

    def _attributes(self, ours: dict[str, Any], sampled: Mapping[str, Any]) -> BoundedAttributes:
        """The span's attributes: the sampler's (ours, unless it changed them), cleaned
        and cut by the limits as the SDK does. Ours (strings and integers, in a dict this
        takes over) are kept as they are when the limits cannot change them."""
        if len(ours) <= self._kept_as_they_are and (sampled is ours or sampled == ours):
            bounded: BoundedAttributes = object.__new__(BoundedAttributes)
            bounded.__dict__ = {
                **self._attributes_template,
                "_dict": ours,
                "_lock": threading.Lock(),
            }
            return bounded
        limits = self._template["_limits"]
        return BoundedAttributes(  # as the SDK's span makes them
            limits.max_span_attributes,
            sampled,
            immutable=False,
            max_value_len=limits.max_span_attribute_length,
        )

    def _configure(self, configuration: tuple[Any, ...]) -> None:
        """Follow the tracer's sampler, resource, processors and limits."""
        self._configuration = configuration
        tracer = self._tracer
        self._template = {
            **self._constant,
            **{field: getattr(tracer, name) for field, name in _TRACER_FIELDS.items()},
        }
        sampler, _, processor, processors, limits = configuration
        self._attributes_template = vars(
            BoundedAttributes(
                limits.max_span_attributes,
                None,
                immutable=False,
                max_value_len=limits.max_span_attribute_length,
            )
        )
        self._kept_as_they_are = (
            -1
            if limits.max_span_attribute_length is not None
            else limits.max_span_attributes
            if limits.max_span_attributes is not None
            else sys.maxsize
        )
        self._follows_parents = _follows_sampled_remote_parents(sampler)
        self._root_bound = _root_bound(sampler) if self._follows_parents else None
        self._plain_start = (
            type(processor) is sdk_trace.SynchronousMultiSpanProcessor
            and isinstance(processors, tuple)
            and all(type(p).on_start in _EMPTY_ON_START for p in processors)
        )


_SAMPLED = trace.TraceFlags.SAMPLED
_RECORD_AND_SAMPLE = sampling.Decision.RECORD_AND_SAMPLE


def _follows_sampled_remote_parents(sampler: sampling.Sampler) -> bool:
    """Whether `sampler` is the SDK's parent-based sampler as it comes (its own
    `should_sample`, AlwaysOn for a sampled remote parent): it answers a child of a sampled
    remote parent with record-and-sample, the attributes it was given and the parent's
    trace state."""
    return (
        isinstance(sampler, sampling.ParentBased)
        and type(sampler).should_sample is sampling.ParentBased.should_sample
        and getattr(sampler, "_remote_parent_sampled", None) is sampling.ALWAYS_ON
    )


_TRACE_ID_LIMIT = sampling.TraceIdRatioBased.TRACE_ID_LIMIT


def _root_bound(sampler: sampling.Sampler) -> int | None:
    """The bound of the root sampler of the SDK's parent-based `sampler`, when that root is
    the SDK's own trace-id-ratio sampler (its `bound`), always on (every trace) or always
    off (none); None for any other root sampler (it is asked)."""
    root = getattr(sampler, "_root", None)
    if root is sampling.ALWAYS_ON:
        return _TRACE_ID_LIMIT + 1
    if root is sampling.ALWAYS_OFF:
        return 0
    if (
        isinstance(root, sampling.TraceIdRatioBased)
        and type(root).should_sample is sampling.TraceIdRatioBased.should_sample
    ):
        return root.bound
    return None


def fast_spans(tracer: trace.Tracer) -> FastSpans | None:
    """A `FastSpans` for `tracer` when it is the SDK's own and its spans look as this
    module expects; None otherwise (the caller then uses `tracer.start_span`)."""
    if type(tracer) is not sdk_trace.Tracer:
        return None
    try:
        return FastSpans(tracer)
    except (AttributeError, TypeError):
        return None
