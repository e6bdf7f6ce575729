"""`cadre.observability.configure`: the standard OTEL settings, service names per role,
clear errors for settings it cannot honour, and an exporter whose failures cost little."""

from __future__ import annotations

import logging
import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from cadre import observability
from cadre.errors import ConfigurationError
from tests.e2e.conftest import free_port

from .conftest import Collector


@pytest.mark.parametrize(
    ("env", "role", "name"),
    [
        ({}, "api", "cadre-api"),
        ({}, "worker", "cadre-worker"),
        ({}, "cli", "cadre-cli"),
        ({"WEBSITE_SITE_NAME": "func-cadre-x1"}, "functions", "func-cadre-x1"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "team=a,service.name=from-attrs"}, "api", "from-attrs"),
        (
            {"OTEL_SERVICE_NAME": "mine", "OTEL_RESOURCE_ATTRIBUTES": "service.name=x"},
            "worker",
            "mine",
        ),
    ],
)
def test_the_service_name_follows_the_standard_settings_then_the_role(
    env: dict[str, str], role: str, name: str
) -> None:
    assert observability.resolve_service_name(env, role) == name


def test_signals_find_their_own_endpoint_or_the_common_one() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:9000/m",
    }
    assert (
        observability._endpoint(env, signal=observability.TRACES)
        == "http://collector:4318/v1/traces"
    )
    assert observability._endpoint(env, signal=observability.METRICS) == "http://metrics:9000/m"
    assert (
        observability._endpoint(
            {**env, "OTEL_TRACES_EXPORTER": "none"}, signal=observability.TRACES
        )
        is None
    )
    assert observability._endpoint({}, signal=observability.TRACES) is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "http/protobuf"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "otlp"),
        ({"CADRE_OTEL_EXIT_TIMEOUT": "soon"}, "number of seconds"),
    ],
)
def test_settings_it_cannot_honour_are_a_clear_error(env: dict[str, str], message: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", **env}
    with pytest.raises(ConfigurationError, match=message):
        observability._protocol(env, signal=observability.TRACES)
        observability._endpoint(env, signal=observability.TRACES)
        observability.exit_timeout(env)


def test_the_sdk_disabled_or_no_endpoint_configures_nothing() -> None:
    assert observability.configure({"OTEL_SDK_DISABLED": "true"}, role="api") == "none"
    assert observability.configure({}, role="worker") == "none"


def test_a_failing_endpoint_is_tried_once_per_period_with_one_warning(
    caplog: pytest.LogCaptureFixture, collector: Collector
) -> None:
    span = _a_span()
    observability._quiet_exporter_retries()  # as configure does: no per-attempt messages
    closed = f"http://127.0.0.1:{free_port()}/v1/traces"
    exporter = observability._guarded(OTLPSpanExporter, closed, "spans")(
        endpoint=closed, timeout=0.5
    )
    with caplog.at_level(logging.WARNING, logger="cadre.observability"):
        assert exporter.export([span]) == SpanExportResult.FAILURE
        started = time.monotonic()
        for _ in range(5):  # dropped at once: no connection attempt, no new warning
            assert exporter.export([span]) == SpanExportResult.FAILURE
        assert time.monotonic() - started < 0.1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert closed in warning and "the work goes on" in warning
    # Once the endpoint answers again (here: the period is over), export resumes.
    exporter._down_until = 0.0
    exporter._endpoint = exporter._client._endpoint = f"{collector.url}/v1/traces"
    with caplog.at_level(logging.WARNING, logger="cadre.observability"):
        assert exporter.export([span]) == SpanExportResult.SUCCESS
    assert "works again" in caplog.records[-1].getMessage()
    assert len(collector.otlp_spans()) == 1


def _a_span() -> object:
    provider = TracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("test").start_span("process test.Add")
    span.end()
    return span
