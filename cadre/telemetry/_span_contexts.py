"""Span contexts made and read by position, on the per-message path.

The OpenTelemetry API's `SpanContext` is a tuple: (trace id, span id, remote, flags, trace
state, valid). Its constructor checks the ids' ranges in Python and each field is a
property, which costs a sampled step more than the rest of its span context handling. Where
`LAID_OUT` holds (checked once, on the installed API), Cadre makes the span contexts of the
traceparents it parses and of the spans it starts with ``tuple.__new__`` and reads their
fields by index; otherwise it uses the constructor and the properties.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace

TRACE_ID, SPAN_ID, REMOTE, FLAGS, STATE = range(5)
"""The positions of a span context's fields."""

SPAN_ID_MAX = 2**64 - 1

new_tuple = tuple.__new__


def _laid_out() -> bool:
    flags, state = trace.TraceFlags(1), trace.TraceState([("k", "v")])
    probe = trace.SpanContext(1, 2, True, flags, state)
    made = new_tuple(trace.SpanContext, (1, 2, True, flags, state, True))
    return (
        isinstance(probe, tuple)
        and tuple(probe) == (1, 2, True, flags, state, True)
        and made == probe
        and (made.trace_id, made.span_id, made.is_remote, made.is_valid) == (1, 2, True, True)
        and made.trace_flags is flags
        and made.trace_state is state
    )


LAID_OUT = _laid_out()
"""Whether `SpanContext` is the tuple this module describes."""


SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())))
"""Where the OpenTelemetry API keeps the current span in a context."""


def context_of(span_context: trace.SpanContext) -> otel_context.Context:
    """A context whose current span is `span_context` (and nothing else): what
    ``trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())`` makes."""
    return otel_context.Context({SPAN_KEY: trace.NonRecordingSpan(span_context)})
