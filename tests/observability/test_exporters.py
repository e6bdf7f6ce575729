"""The exporters chosen at the edge, run for real in a child process against a local HTTP
server standing in for the collector (OTLP) and for Application Insights' ingestion."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cadre import observability
from cadre.errors import ConfigurationError
from cadre.telemetry import LogContextFilter

from .conftest import Collector

ROOT = Path(__file__).resolve().parents[2]


def run_child(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATION"))}
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.otel_child"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_no_exporter_configured_means_none() -> None:
    assert observability.configure({}) == "none"


def test_otlp_exports_the_task_spans_and_metrics(collector: Collector) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    chosen = run_child({"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url})
    assert chosen == "otlp"
    assert {"/v1/traces", "/v1/metrics"} <= collector.paths()
    names = set()
    for path, body in collector.requests:
        if path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    names.update(span.name for span in scope.spans)
    # The client's send, then one span per step (a reply carries its step's span).
    assert {"send test.Add", "process test.Add", "process test.Added"} <= names
    assert "send test.Added" not in names


def test_application_insights_receives_requests_and_dependencies(collector: Collector) -> None:
    connection = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint={collector.url}/;LiveEndpoint={collector.url}/"
    )
    chosen = run_child(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": connection,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            # Keep every trace (the distro's default rate limiter may drop the first).
            "OTEL_TRACES_SAMPLER": "microsoft.fixed_percentage",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
        }
    )
    assert chosen == "azure-monitor"
    items = []
    for path, body in collector.requests:
        if path.endswith("/track"):
            text = body.decode()
            lines = text.splitlines() if not text.startswith("[") else [text]
            for line in lines:
                parsed = json.loads(line)
                items.extend(parsed if isinstance(parsed, list) else [parsed])
    names = {item["data"]["baseData"].get("name") for item in items}
    assert "process test.Add" in names  # CONSUMER spans arrive as requests
    kinds = {item["data"]["baseType"] for item in items}
    assert {"RequestData", "RemoteDependencyData"} <= kinds


def test_a_missing_exporter_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", None)
    with pytest.raises(ConfigurationError, match=r"\.\[azure-monitor\]"):
        observability.configure({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})


def test_configure_correlates_logs_even_without_an_exporter() -> None:
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(logging.Formatter("%(task_id)s|%(trace_id)s|%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        assert observability.configure({}) == "none"
        observability.configure({})  # idempotent: one filter per handler
        assert sum(isinstance(f, LogContextFilter) for f in handler.filters) == 1
        root.warning("outside any step")
        assert handler.stream.getvalue() == "||outside any step\n"  # type: ignore[attr-defined]
    finally:
        root.removeHandler(handler)
