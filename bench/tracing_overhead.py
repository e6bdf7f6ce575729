"""Where tracing's cost goes, per ping-pong message: the evidence behind the tracing ratios
of `bench/core.py`.

    python bench/tracing_overhead.py [--pairs 5000]

CPU time (``time.process_time``, less disturbed by a shared machine than wall time) of:
  - one message with tracing off (the whole step: store, transport, handler);
  - the same with tracing on (one span per step, the default), spans exported to an
    exporter that keeps them (the SDK's in-memory one, as `bench/core.py` measures) and
    to one that lets them go, also with CADRE_TRACE_SENDS=true (a send span too);
  - the OpenTelemetry SDK alone: a bare span, and a span with the attributes Cadre sets;
  - Cadre's telemetry code per message outside a step: a sampled step (its span, the
    traceparent it gives its reply) and a step whose task is not sampled.
Then the best ratio any instrumentation could reach with one SDK span per message.
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
    "cadre.agent.type": "ponger",
    "cadre.agent.key": "1",
    "messaging.message.conversation_id": "b" * 32,
}
"""What a handled step's span carries (`cadre.telemetry.Telemetry._start_process_span`)."""


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
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    from opentelemetry.trace import SpanKind

    from cadre import telemetry
    from cadre.envelope import Envelope, new_id, utcnow

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracer = provider.get_tracer("bench")
    tel = telemetry.Telemetry(tracer_provider=provider)
    tel.refresh(force=True)
    never = TracerProvider(sampler=ParentBasedTraceIdRatio(0.0), shutdown_on_exit=False)
    quiet = telemetry.Telemetry(tracer_provider=never)
    quiet.refresh(force=True)
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
    unsampled = envelope.model_copy(update={"traceparent": f"{sent[:-2]}00"})  # type: ignore[index]

    def cadre_message(tel: telemetry.Telemetry, envelope: Envelope) -> Callable[[], None]:
        """One step's telemetry as `cadre.processing.Processor.process` runs it."""

        def send() -> None:
            tel.producer_traceparent(
                "send", "bench.Pong", "pinger/1", task_id=envelope.task_id, envelope_id="x"
            )

        def step() -> None:
            quiet = tel.enter_quiet(envelope)
            if quiet is not None:
                send()
                telemetry.leave_quiet(quiet)
                return
            with tel.processing(envelope):
                send()

        return step

    costs = {
        "sdk_bare_span_us": per_call(lambda: tracer.start_span("s").end()),
        "sdk_process_span_us": per_call(
            lambda: tracer.start_span(
                "process", kind=SpanKind.CONSUMER, attributes=PROCESS_ATTRIBUTES
            ).end()
        ),
        "cadre_telemetry_per_message_us": per_call(cadre_message(tel, envelope)),
        "cadre_telemetry_unsampled_us": per_call(cadre_message(quiet, unsampled)),
    }
    provider.shutdown()
    never.shutdown()
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
        with_sends = per_message(
            lambda: cadre_pingpong_traced(args.pairs, folder, keep=False, sends=True),
            args.pairs,
        )
    result = {
        "untraced_us": off,
        "traced_kept_us": kept,
        "traced_let_go_us": let_go,
        "traced_let_go_with_send_spans_us": with_sends,
    }
    result |= sdk_costs()
    result["best_ratio_with_this_span"] = off / (off + result["sdk_process_span_us"])
    result["best_ratio_with_a_bare_span"] = off / (off + result["sdk_bare_span_us"])
    for name, value in result.items():
        print(f"{name:<34} {value:8.2f}")
    print(json.dumps({k: round(v, 3) for k, v in result.items()}))
    return result


if __name__ == "__main__":
    main()
