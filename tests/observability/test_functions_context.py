"""Under Azure Functions the trace continues the host's context (`functions_context`).

The invocation context is the one thing that cannot run here (no Functions host): a
stand-in with the properties of ``azure.functions.TraceContext``, carrying the host's W3C
headers as the Python worker passes them. Everything else is the real delivery glue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from opentelemetry.trace import SpanKind

from cadre import AgentId, LocalRuntime
from cadre.envelope import Envelope
from cadre.hosts.functions import Received, handle_delivery
from cadre.hosts.functions_telemetry import functions_context
from tests.support.contracts import Add, make_registry

from .conftest import Otel

HOST_SPAN = 0x00F067AA0BA902B7
OTHER_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


class HostTraceContext:
    """What the Functions Python worker hands the function as ``context.trace_context``
    (the properties of ``azure.functions.TraceContext``)."""

    def __init__(self, trace_parent: str, trace_state: str = "") -> None:
        self._parent, self._state = trace_parent, trace_state

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return self._state

    @property
    def attributes(self) -> dict[str, str]:
        return {}


@dataclass
class Invocation:
    trace_context: HostTraceContext | None


def host(trace_id: int, span_id: int = HOST_SPAN) -> Invocation:
    return Invocation(HostTraceContext(f"00-{trace_id:032x}-{span_id:016x}-01", "vendor=x"))


@pytest.fixture
async def runtime(otel: Otel) -> AsyncIterator[LocalRuntime]:
    rt = LocalRuntime(registry=make_registry())  # not started: the "function" delivers
    yield rt
    await rt.close()


async def submitted(rt: LocalRuntime) -> Envelope:
    return await rt.send(AgentId("counter", "a"), Add(amount=1), reply_to=AgentId("recorder", "a"))


async def test_a_delivery_nests_under_the_host_span_that_continued_its_trace(
    otel: Otel, runtime: LocalRuntime
) -> None:
    envelope = await submitted(runtime)
    trace_id = int(envelope.traceparent.split("-")[1], 16)  # type: ignore[union-attr]
    # The host read the message's Diagnostic-Id: its span is in the task's trace.
    with functions_context(host(trace_id)):
        await handle_delivery(runtime.processor, Received(envelope.to_bytes(), 1))
    [process] = [s for s in otel.finished() if s.kind is SpanKind.CONSUMER]
    assert process.context.trace_id == trace_id
    assert process.parent is not None and process.parent.span_id == HOST_SPAN
    # The step's own sends are still its children: the tree goes on below the host span.
    [reply] = [s for s in otel.finished() if s.name == "send test.Added"]
    assert reply.parent.span_id == process.context.span_id  # type: ignore[union-attr]


async def test_a_host_span_of_another_trace_is_linked_and_the_task_stays_one_trace(
    otel: Otel, runtime: LocalRuntime
) -> None:
    envelope = await submitted(runtime)
    [send] = otel.finished()
    with functions_context(host(OTHER_TRACE)):
        await handle_delivery(runtime.processor, Received(envelope.to_bytes(), 1))
    [process] = [s for s in otel.finished() if s.kind is SpanKind.CONSUMER]
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id  # type: ignore[union-attr]
    [link] = process.links
    assert (link.context.trace_id, link.context.span_id) == (OTHER_TRACE, HOST_SPAN)


async def test_a_task_submitted_in_an_http_function_joins_the_request_trace(
    otel: Otel, runtime: LocalRuntime
) -> None:
    with functions_context(host(OTHER_TRACE)):
        envelope = await submitted(runtime)
    [send] = otel.finished()
    assert send.context.trace_id == OTHER_TRACE
    assert send.parent.span_id == HOST_SPAN  # type: ignore[union-attr]
    assert envelope.traceparent == f"00-{OTHER_TRACE:032x}-{send.context.span_id:016x}-01"


@pytest.mark.parametrize("context", [Invocation(None), object(), Invocation(HostTraceContext(""))])
async def test_without_a_host_trace_context_nothing_changes(
    otel: Otel, runtime: LocalRuntime, context: object
) -> None:
    envelope = await submitted(runtime)
    [send] = otel.finished()
    with functions_context(context):
        await handle_delivery(runtime.processor, Received(envelope.to_bytes(), 1))
    [process] = [s for s in otel.finished() if s.kind is SpanKind.CONSUMER]
    assert process.parent.span_id == send.context.span_id  # type: ignore[union-attr]
    assert not process.links
