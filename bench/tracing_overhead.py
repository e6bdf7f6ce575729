"""Where tracing's cost goes, per ping-pong message: the evidence behind `tracing_ratio`.

    python bench/tracing_overhead.py [--pairs 5000]

CPU time (``time.process_time``, less disturbed by a shared machine than wall time) of:
  - one message with tracing off (the whole step: store, transport, handler);
  - the same with tracing on, spans exported to an exporter that keeps them (the SDK's
    in-memory one, as `bench/core.py` measures) and to one that lets them go, also with
    CADRE_TRACE_SENDS=false (one span per message);
  - the OpenTelemetry SDK alone: a bare span, and spans with the attributes Cadre sets;
  - Cadre's telemetry code per message (a process span and a send span) outside a step.
Then the best ratio any instrumentation could reach with the SDK's two spans per message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import cadre_pingpong, cadre_pingpong_traced

PROCESS_ATTRIBUTES: dict[str, Any] = {
    "messaging.system": "cadre",
    "messaging.operation.type": "process",
    "messaging.destination.name": "ponger",
    "messaging.message.id": "a" * 32,
    "messaging.message.conversation_id": "b" * 32,
    "cadre.agent.type": "ponger",
    "cadre.agent.key": "1",
    "cadre.message.name": "bench.Ping",
    "cadre.message.version": 1,
    "cadre.delivery.attempt": 1,
}
SEND_ATTRIBUTES = dict(list(PROCESS_ATTRIBUTES.items())[:5]) | {"cadre.message.name": "b.Pong"}


def per_call(fn: Callable[[], object], n: int = 20_000, repeats: int = 5) -> float:
    """Median CPU microseconds per call of `fn`, with the cyclic GC off (isolates the code)."""
    results = []
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.process_time()
            for _ in range(n):
                fn()
            results.append((time.process_time() - started) / n * 1e6)
    finally:
        gc.enable()
    return statistics.median(results)


def per_message(run: Callable[[], Any], pairs: int, repeats: int = 3) -> float:
    """Median CPU microseconds per message of a ping-pong run."""
    results = []
    for _ in range(repeats):
        started = time.process_time()
        asyncio.run(run())
        results.append((time.process_time() - started) / (2 * pairs) * 1e6)
        gc.collect()
    return statistics.median(results)


def sdk_costs() -> dict[str, float]:
    """The SDK's own cost of one span, and Cadre's telemetry per message outside a step."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    from cadre import telemetry
    from cadre.envelope import Envelope, new_id, utcnow

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracer = provider.get_tracer("bench")
    tel = telemetry.Telemetry(tracer_provider=provider)
    envelope = Envelope(
        id=new_id(),
        message="bench.Ping",
        version=1,
        payload={},
        task_id=new_id(),
        recipient="ponger/1",
        created_at=utcnow(),
    )
    sent = tel.producer_traceparent(
        "send", "bench.Ping", "ponger/1", task_id=envelope.task_id, envelope_id=envelope.id
    )
    envelope = envelope.model_copy(update={"traceparent": sent})

    def cadre_message() -> None:
        with tel.processing(envelope):
            tel.producer_traceparent(
                "send", "bench.Pong", "pinger/1", task_id=envelope.task_id, envelope_id="x"
            )

    costs = {
        "sdk_bare_span_us": per_call(lambda: tracer.start_span("s").end()),
        "sdk_process_span_us": per_call(
            lambda: tracer.start_span(
                "process", kind=SpanKind.CONSUMER, attributes=PROCESS_ATTRIBUTES
            ).end()
        ),
        "sdk_send_span_us": per_call(
            lambda: tracer.start_span(
                "send", kind=SpanKind.PRODUCER, attributes=SEND_ATTRIBUTES
            ).end()
        ),
        "cadre_telemetry_per_message_us": per_call(cadre_message),
    }
    provider.shutdown()
    return costs


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Measure, print a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        off = per_message(lambda: cadre_pingpong(args.pairs, "memory", folder), args.pairs)
        kept = per_message(lambda: cadre_pingpong_traced(args.pairs, folder), args.pairs)
        let_go = per_message(
            lambda: cadre_pingpong_traced(args.pairs, folder, keep=False), args.pairs
        )
        one_span = per_message(
            lambda: cadre_pingpong_traced(args.pairs, folder, keep=False, sends=False),
            args.pairs,
        )
    result = {
        "untraced_us": off,
        "traced_kept_us": kept,
        "traced_let_go_us": let_go,
        "traced_let_go_no_send_spans_us": one_span,
    }
    result |= sdk_costs()
    sdk_two_spans = result["sdk_process_span_us"] + result["sdk_send_span_us"]
    result["best_ratio_with_these_spans"] = off / (off + sdk_two_spans)
    result["best_ratio_with_two_bare_spans"] = off / (off + 2 * result["sdk_bare_span_us"])
    for name, value in result.items():
        print(f"{name:<34} {value:8.2f}")
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main()
