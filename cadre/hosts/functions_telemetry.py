"""Telemetry glue of the Azure Functions host: continue the host's trace per invocation.

The Functions host starts a span for every invocation (an HTTP request, a Service Bus
message whose Diagnostic-Id it read) and hands its W3C context to the Python worker as
``context.trace_context``. `functions_context` makes that span the current one inside the
invocation (`cadre.telemetry.host_span`), so a task submitted over HTTP is its child and a
delivery's process span nests under it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import telemetry

_propagator = TraceContextTextMapPropagator()


@contextlib.contextmanager
def functions_context(context: Any) -> Iterator[otel_context.Context]:
    """Continue the Azure Functions host's trace inside the block.

    `context` is the invocation's ``azure.functions.Context``; its
    ``trace_context.trace_parent`` is the host's span. Inside the block spans Cadre starts
    (a task submitted over HTTP) are its children, and a delivery's process span nests
    under it when the host continued the message's trace. Without a trace context this
    changes nothing.
    """
    carrier = trace_carrier(getattr(context, "trace_context", None))
    span_context = (
        trace.get_current_span(_propagator.extract(carrier)).get_span_context()
        if carrier
        else trace.INVALID_SPAN_CONTEXT
    )
    if not span_context.is_valid:
        yield otel_context.get_current()
        return
    with telemetry.host_span(span_context) as ctx:
        yield ctx


def trace_carrier(trace_context: Any) -> dict[str, str]:
    """The W3C headers of a Functions `TraceContext` (the worker's class spells them
    ``Traceparent``/``Tracestate`` too)."""
    if trace_context is None:
        return {}
    parent = getattr(trace_context, "trace_parent", None) or getattr(
        trace_context, "Traceparent", None
    )
    state = getattr(trace_context, "trace_state", None) or getattr(
        trace_context, "Tracestate", None
    )
    carrier = {"traceparent": parent} if isinstance(parent, str) and parent else {}
    if carrier and isinstance(state, str) and state:
        carrier["tracestate"] = state
    return carrier
