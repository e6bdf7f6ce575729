"""Telemetry at the edge: every Cadre process configures its exporters the same way.

Every process Cadre starts calls `configure(role=...)` once at start-up: `cadre serve`
(``api``), `cadre worker` (``worker``), `cadre run`/`send`/`resume` (``cli``), the Functions
app (``functions``). The runtime itself only uses the OpenTelemetry API (`cadre.telemetry`);
without an exporter configured nothing is recorded and nothing costs.

| environment                              | exporter                                          |
| ---------------------------------------- | ------------------------------------------------- |
| `APPLICATIONINSIGHTS_CONNECTION_STRING`  | Azure Monitor OpenTelemetry distro (App Insights) |
| `OTEL_EXPORTER_OTLP_ENDPOINT` (or the    | OTLP over HTTP (Jaeger, Honeycomb, Datadog, a     |
| `_TRACES_`/`_METRICS_` ones)             | collector); `OTEL_*` settings honoured            |
| neither                                  | nothing: no export, no cost                       |

The service name is `OTEL_SERVICE_NAME`, else ``service.name`` in
`OTEL_RESOURCE_ATTRIBUTES`, else one per role: ``cadre-api``, ``cadre-worker``,
``cadre-cli``, and under Functions the function app's name (``WEBSITE_SITE_NAME``).

Export never slows or breaks the work: spans and metrics leave through batch processors
with bounded queues, on their own threads; an endpoint that fails gets one warning and is
left alone for `RETRY_SECONDS`; at exit the flush waits at most
``CADRE_OTEL_EXIT_TIMEOUT`` seconds (default 2).

`--trace PATH` on the CLI writes one task's spans to a JSON-lines file instead
(`JsonLinesSpanExporter`), and `span_tree` prints it as a tree.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import telemetry
from .errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

log = logging.getLogger("cadre.observability")

SERVICE_NAME = "cadre"
"""The service name when no role is given (kept for callers of the old signature)."""

ROLE_NAMES = {"api": "cadre-api", "worker": "cadre-worker", "cli": "cadre-cli"}
"""The service name of each role when the environment names none."""

EXIT_TIMEOUT_SECONDS = 2.0
"""How long the flush at exit may take by default (``CADRE_OTEL_EXIT_TIMEOUT``)."""

RETRY_SECONDS = 30.0
"""After an export fails, how long later batches are dropped before the endpoint is tried
again (so an endpoint that is down costs one attempt per this period, not one per batch)."""

INSTALL_OTLP = "pip install -e '.[otlp]'"
INSTALL_SDK = "pip install -e '.[otlp]'  (the OpenTelemetry SDK)"

_lock = threading.Lock()
_configured: str | None = None
_providers: list[Any] = []
_endpoints: list[str] = []
_exit_timeout = EXIT_TIMEOUT_SECONDS


def resolve_service_name(env: Mapping[str, str], role: str | None) -> str:
    """The service name: `OTEL_SERVICE_NAME`, ``service.name`` in
    `OTEL_RESOURCE_ATTRIBUTES`, else the role's (under Functions the app's name)."""
    name = env.get("OTEL_SERVICE_NAME", "").strip()
    if name:
        return name
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, _, value = pair.partition("=")
        if key.strip() == "service.name" and value.strip():
            return value.strip()
    if role == "functions":
        return env.get("WEBSITE_SITE_NAME", "").strip() or "cadre-functions"
    return ROLE_NAMES.get(role or "", SERVICE_NAME)


def configure(
    env: Mapping[str, str] | None = None,
    *,
    role: str | None = None,
    service_name: str | None = None,
) -> str:
    """Install the exporters the environment asks for, once per process; returns
    ``"azure-monitor"``, ``"otlp"`` or ``"none"`` (once something is installed, later
    calls return that answer and change nothing).
    `role` (``api``, ``worker``, ``cli``, ``functions``) names the service when the
    environment does not; `service_name` overrides both. A missing package or an
    unsupported setting is a `ConfigurationError` that says what to do."""
    global _configured
    env = os.environ if env is None else env
    global _exit_timeout
    with _lock:
        if _configured is not None and env is os.environ:
            return _configured
        _exit_timeout = exit_timeout(env)  # a bad value stops here, not at exit
        name = service_name or resolve_service_name(env, role)
        chosen = "none"
        if _flag(env, "OTEL_SDK_DISABLED"):
            pass
        elif env.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
            _azure_monitor(env["APPLICATIONINSIGHTS_CONNECTION_STRING"], name)
            chosen = "azure-monitor"
        elif _otlp(env, name):
            chosen = "otlp"
        correlate_logs()
        telemetry.current().refresh(force=True)
        if env is os.environ and chosen != "none":  # providers are set once per process
            _configured = chosen
        return chosen


def shutdown(timeout: float | None = None) -> bool:
    """Flush and stop the exporters `configure` installed, waiting at most `timeout`
    seconds (default ``CADRE_OTEL_EXIT_TIMEOUT``, 2); runs at exit. Returns whether
    everything was sent in time; if not, says so once and drops the rest."""
    with _lock:
        providers, _providers[:] = list(_providers), []
    if not providers:
        return True
    if timeout is None:
        timeout = _exit_timeout
    deadline = time.monotonic() + timeout

    def stop() -> None:
        for provider in providers:
            left = max(deadline - time.monotonic(), 0.0)
            try:
                provider.force_flush(int(left * 1000))
                provider.shutdown()
            except Exception as exc:  # an exporter's bug must not break the exit
                log.debug("telemetry shutdown: %s", exc)

    worker = threading.Thread(target=stop, name="cadre-telemetry-exit", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        where = ", ".join(_endpoints) or "the exporter"
        log.warning(
            "telemetry: export to %s did not finish within %.1f s at exit; the spans and "
            "metrics not yet sent were dropped (is the collector reachable? "
            "CADRE_OTEL_EXIT_TIMEOUT sets the wait)",
            where,
            timeout,
        )
        return False
    return True


def exit_timeout(env: Mapping[str, str] | None = None) -> float:
    """``CADRE_OTEL_EXIT_TIMEOUT`` in seconds (default `EXIT_TIMEOUT_SECONDS`)."""
    env = os.environ if env is None else env
    raw = env.get("CADRE_OTEL_EXIT_TIMEOUT", "").strip()
    if not raw:
        return EXIT_TIMEOUT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"CADRE_OTEL_EXIT_TIMEOUT={raw!r} is not a number of seconds"
        ) from None
    if value < 0:
        raise ConfigurationError(f"CADRE_OTEL_EXIT_TIMEOUT={raw!r} must be 0 or more")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def correlate_logs() -> None:
    """Put `LogContextFilter` on the handlers of the root and ``cadre`` loggers (once
    each), so their records carry ``trace_id``, ``span_id`` and ``task_id``."""
    for logger in (logging.getLogger(), logging.getLogger("cadre")):
        for handler in logger.handlers:
            if not any(isinstance(f, telemetry.LogContextFilter) for f in handler.filters):
                handler.addFilter(telemetry.LogContextFilter())


def _azure_monitor(connection_string: str, name: str) -> None:
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
        resource=Resource.create({"service.name": name}),
        logger_name="cadre",
    )


@dataclass(frozen=True)
class _Signal:
    """The settings of one signal (traces or metrics), by their full names."""

    exporter: str
    endpoint: str
    protocol: str
    path: str


TRACES = _Signal(
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "/v1/traces",
)
METRICS = _Signal(
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "/v1/metrics",
)


def _endpoint(env: Mapping[str, str], *, signal: _Signal) -> str | None:
    """Where a signal goes: its own endpoint, else the common one; None when its exporter
    is ``none`` (``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``)."""
    exporter = env.get(signal.exporter, "otlp").strip().lower() or "otlp"
    if exporter == "none":
        return None
    if exporter != "otlp":
        raise ConfigurationError(
            f"{signal.exporter}={exporter!r}: Cadre configures the OTLP exporter "
            "(otlp) or none; for another one, set up the OpenTelemetry SDK yourself"
        )
    own = env.get(signal.endpoint, "").strip()
    if own:
        return own
    common = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return common.rstrip("/") + signal.path if common else None


def _protocol(env: Mapping[str, str], *, signal: _Signal) -> str:
    raw = env.get(signal.protocol) or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    protocol = raw.strip().lower()
    if protocol not in ("http/protobuf", "grpc"):
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={raw!r}: the OpenTelemetry Python exporters speak "
            "http/protobuf (the default) or grpc"
        )
    return protocol


def _exporter_classes(protocol: str) -> tuple[Any, Any]:
    try:
        if protocol == "grpc":  # not a dependency of Cadre: installed by hand
            grpc = "opentelemetry.exporter.otlp.proto.grpc"
            span = importlib.import_module(f"{grpc}.trace_exporter").OTLPSpanExporter
            metric = importlib.import_module(f"{grpc}.metric_exporter").OTLPMetricExporter
            return span, metric
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        package = (
            "pip install opentelemetry-exporter-otlp-proto-grpc"
            if protocol == "grpc"
            else INSTALL_OTLP
        )
        raise ConfigurationError(
            f"an OTLP endpoint is set but the OTLP exporter ({protocol}) is not installed: "
            f"{package}"
        ) from None
    return OTLPSpanExporter, OTLPMetricExporter


def _otlp(env: Mapping[str, str], name: str) -> bool:
    """Install OTLP exporters for the signals that have an endpoint; whether any has."""
    traces, metrics_at = _endpoint(env, signal=TRACES), _endpoint(env, signal=METRICS)
    if traces is None and metrics_at is None:
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigurationError(
            f"an OTLP endpoint is set but the OpenTelemetry SDK is not installed: {INSTALL_OTLP}"
        ) from None
    resource = Resource.create({"service.name": name})
    if traces is not None:
        span_cls, _ = _exporter_classes(_protocol(env, signal=TRACES))
        # The sampler comes from OTEL_TRACES_SAMPLER/_ARG; the queue, batch size and delay
        # from OTEL_BSP_*. Cadre samples whole tasks: see cadre.telemetry.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        exporter = _guarded(span_cls, traces, "spans")(endpoint=traces)
        tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(tracer_provider)
        _providers.append(tracer_provider)
        _endpoints.append(traces)
    if metrics_at is not None:
        _, metric_cls = _exporter_classes(_protocol(env, signal=METRICS))
        exporter = _guarded(metric_cls, metrics_at, "metrics")(endpoint=metrics_at)
        reader = PeriodicExportingMetricReader(exporter)
        meter_provider = MeterProvider(
            resource=resource, metric_readers=[reader], shutdown_on_exit=False
        )
        metrics.set_meter_provider(meter_provider)
        _providers.append(meter_provider)
        if metrics_at not in _endpoints:
            _endpoints.append(metrics_at)
    _quiet_exporter_retries()
    atexit.register(shutdown)
    return True


def _guarded(cls: Any, endpoint: str, what: str) -> Any:
    """`cls` (an OTLP exporter class) whose failures cost little and say so once: after a
    failed export, batches are dropped for `RETRY_SECONDS` without a connection attempt,
    and one warning names the endpoint (another when it works again)."""

    class Guarded(cls):  # type: ignore[misc]
        _down_until = 0.0
        _failing = False

        def export(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
            success, failure = _results(batch)
            if time.monotonic() < self._down_until:
                return failure
            error = ""
            try:
                result = super().export(batch, *args, **kwargs)
            except Exception as exc:  # never into the SDK's thread
                result, error = failure, f": {exc}"
            if result == success:
                if self._failing:
                    self._failing = False
                    log.warning("telemetry: exporting %s to %s works again", what, endpoint)
                return result
            self._down_until = time.monotonic() + RETRY_SECONDS
            if not self._failing:
                self._failing = True
                log.warning(
                    "telemetry: could not export %s to %s%s; dropping them, trying again "
                    "every %.0f s (the work goes on)",
                    what,
                    endpoint,
                    error,
                    RETRY_SECONDS,
                )
            return failure

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{cls.__name__}"
    return Guarded


def _results(batch: Any) -> tuple[Any, Any]:
    """The success and failure values of the exporter kind that takes `batch`."""
    if isinstance(batch, Sequence):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS, SpanExportResult.FAILURE
    from opentelemetry.sdk.metrics.export import MetricExportResult

    return MetricExportResult.SUCCESS, MetricExportResult.FAILURE


class _NoRetryNoise(logging.Filter):
    """Drops the OTLP exporters' per-attempt messages (retrying, failed batch): the guarded
    exporter says once what happened instead."""

    WORDS = ("retry", "retrying", "Failed to export", "Transient error", "Shutdown in progress")

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(word in message for word in self.WORDS)


def _quiet_exporter_retries() -> None:
    """Put `_NoRetryNoise` on the exporters' and the SDK's loggers (a filter applies to
    its own logger only: each module's, once imported)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not name.startswith(("opentelemetry.exporter", "opentelemetry.sdk")):
            continue
        if isinstance(logger, logging.Logger) and not any(
            isinstance(f, _NoRetryNoise) for f in logger.filters
        ):
            logger.addFilter(_NoRetryNoise())


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
    """A tracer provider writing every span to `path` (JSON lines), installed for Cadre.
    Without the OpenTelemetry SDK, a `ConfigurationError` with the install line."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    except ImportError:
        raise ConfigurationError(
            f"--trace needs the OpenTelemetry SDK, which is not installed: {INSTALL_SDK}"
        ) from None

    provider = TracerProvider(shutdown_on_exit=False)
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
