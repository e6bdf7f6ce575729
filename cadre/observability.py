"""Telemetry at the edge: which exporter the process sends spans and metrics to.

Entry points (the CLI, the Functions app, workers) call `configure()` once at start-up;
the runtime itself only uses the OpenTelemetry API (`cadre.telemetry`).

| environment                              | exporter                                        |
| ---------------------------------------- | ----------------------------------------------- |
| `APPLICATIONINSIGHTS_CONNECTION_STRING`  | Azure Monitor OpenTelemetry distro (App Insights) |
| `OTEL_EXPORTER_OTLP_ENDPOINT`            | OTLP over HTTP (Jaeger, Honeycomb, Datadog, ...)  |
| neither                                  | nothing: no export, no cost                     |
| `CADRE_TRACE_CONTENT=true`               | also record message payloads on spans           |
| `CADRE_TRACE_SENDS=false`                | no send spans inside steps (one span a message) |

`--trace PATH` on the CLI writes one task's spans to a JSON-lines file instead
(`JsonLinesSpanExporter`), and `span_tree` prints it as a tree.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

SERVICE_NAME = "cadre"


def configure(env: Mapping[str, str] | None = None, *, service_name: str = SERVICE_NAME) -> str:
    """Install the exporter the environment asks for; returns ``"azure-monitor"``,
    ``"otlp"`` or ``"none"``. A missing package is a `ConfigurationError` naming the extra."""
    env = os.environ if env is None else env
    chosen = "none"
    if env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
        _azure_monitor(env["APPLICATIONINSIGHTS_CONNECTION_STRING"], service_name)
        chosen = "azure-monitor"
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        _otlp(service_name)
        chosen = "otlp"
    correlate_logs()
    telemetry.current().refresh(force=True)
    return chosen


def correlate_logs() -> None:
    """Put `LogContextFilter` on the handlers of the root and ``cadre`` loggers (once
    each), so their records carry ``trace_id``, ``span_id`` and ``task_id``."""
    for logger in (logging.getLogger(), logging.getLogger("cadre")):
        for handler in logger.handlers:
            if not any(isinstance(f, telemetry.LogContextFilter) for f in handler.filters):
                handler.addFilter(telemetry.LogContextFilter())


def _azure_monitor(connection_string: str, service_name: str) -> None:
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        raise ConfigurationError(
            "APPLICATIONINSIGHTS_CONNECTION_STRING is set but the Azure Monitor distro is not "
            "installed: pip install -e '.[azure-monitor]'"
        ) from None
    from opentelemetry.sdk.resources import Resource

    configure_azure_monitor(
        connection_string=connection_string,
        resource=Resource.create({"service.name": service_name}),
        logger_name="cadre",
    )


def _otlp(service_name: str) -> None:
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigurationError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install -e '.[otlp]'"
        ) from None
    resource = Resource.create({"service.name": service_name})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


# -- a task's spans in a file ---------------------------------------------------------------


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One span as the JSON object written per line."""
    ctx = span.context
    assert ctx is not None
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "name": span.name,
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in span.events],
    }


class JsonLinesSpanExporter:
    """A span exporter that appends each finished span to a file as one JSON line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans and flush, so the file is complete even if the process dies."""
        from opentelemetry.sdk.trace.export import SpanExportResult

        for span in spans:
            self._file.write(json.dumps(span_record(span), default=str) + "\n")
        self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        self._file.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Everything is written at export."""
        return True


def trace_to_file(path: str | Path) -> TracerProvider:
    """A tracer provider writing every span to `path` (JSON lines), installed for Cadre."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(path)))  # type: ignore[arg-type]
    return provider


def span_tree(path: str | Path, trace_id: str | None = None) -> str:
    """The spans in a JSON-lines file as an indented tree (of one trace, or of all)."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    if trace_id is not None:
        records = [r for r in records if r["trace_id"] == trace_id]
    ids = {r["span_id"] for r in records}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["start_ns"]):
        parent = record["parent_span_id"] if record["parent_span_id"] in ids else None
        children.setdefault(parent, []).append(record)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for record in children.get(parent, []):
            indent = "  " * depth
            lines.append(f"{indent}{_span_line(record)}")
            for event in record.get("events", []):
                lines.append(f"{indent}  · {_event_line(event)}")
            walk(record["span_id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def _short(key: str) -> str:
    return key if len(key) <= 12 else f"{key[:8]}…"


def _span_line(record: dict[str, Any]) -> str:
    """One span: name, kind, where it ran, its outcome or tokens, its duration."""
    attrs = record["attributes"]
    parts = [f"{record['name']} ({record['kind'].lower()})"]
    if "cadre.agent.key" in attrs:
        parts.append(f"@ {attrs['cadre.agent.type']}/{_short(str(attrs['cadre.agent.key']))}")
    elif "gen_ai.agent.name" in attrs:
        parts.append(f"@ {attrs['gen_ai.agent.name']}")
    if "cadre.outcome" in attrs:
        parts.append(f"[{attrs['cadre.outcome']}]")
    if "gen_ai.usage.input_tokens" in attrs:
        parts.append(
            f"[{attrs['gen_ai.usage.input_tokens']} in, "
            f"{attrs.get('gen_ai.usage.output_tokens', 0)} out tokens]"
        )
    if record.get("status") == "ERROR":
        parts.append("ERROR")
    parts.append(f"{(record['end_ns'] - record['start_ns']) / 1e6:.1f} ms")
    return " ".join(parts)


def _event_line(event: dict[str, Any]) -> str:
    """A team decision: ``speaker_selected writer (round robin)``, ``terminated ...``."""
    name = event["name"].removeprefix("cadre.team.")
    attrs = event.get("attributes", {})
    if "cadre.team.speaker" in attrs and "cadre.team.selected_by" in attrs:
        return f"{name} {attrs['cadre.team.speaker']} ({attrs['cadre.team.selected_by']})"
    if "cadre.team.reason" in attrs:
        status = attrs.get("cadre.task.status")
        return f"{name}{f' {status}' if status else ''}: {attrs['cadre.team.reason']}"
    details = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in attrs.items())
    return f"{name} {details}".strip()
