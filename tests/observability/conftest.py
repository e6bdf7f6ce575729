"""The OpenTelemetry SDK with in-memory exporters, installed as Cadre's telemetry."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cadre import telemetry
from cadre.telemetry import Telemetry


@dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def metric_points(self, name: str) -> list[tuple[dict[str, object], object]]:
        data = self.metrics.get_metrics_data()
        points = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            if value is None:
                                value = point.count  # a histogram: how many recorded
                            points.append((dict(point.attributes), value))
        return points

    def histogram_sums(self, name: str) -> list[tuple[dict[str, object], float]]:
        """The sum of every data point of histogram `name`, with its attributes."""
        data = self.metrics.get_metrics_data()
        sums = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            sums.append((dict(point.attributes), point.sum))
        return sums


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider(metric_readers=[reader])
    # With a send span per message (CADRE_TRACE_SENDS=true): the full tree. The default, one
    # span per step, is what the tests that build their own Telemetry check.
    tel = Telemetry(tracer_provider, meter_provider, capture_content=False, trace_sends=True)
    with telemetry.installed(tel):
        yield Otel(spans, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class Collector:
    """A local HTTP server standing in for an OTLP collector and for Application Insights'
    ingestion: it keeps every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.requests.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"itemsReceived": 1, "itemsAccepted": 1, "errors": []}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def paths(self) -> set[str]:
        return {path for path, _ in self.requests}

    def otlp_spans_by_service(self) -> list[tuple[str, Any]]:
        """Every span received on /v1/traces with the ``service.name`` of its resource."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = []
        for path, body in list(self.requests):
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = resource_attributes(resource.resource)["service.name"]
                    for scope in resource.scope_spans:
                        spans.extend((service, span) for span in scope.spans)
        return spans

    def metric_resources(self) -> list[dict[str, str]]:
        """The resource attributes of every metrics export received on /v1/metrics."""
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )

        found = []
        for path, body in list(self.requests):
            if path == "/v1/metrics":
                request = ExportMetricsServiceRequest.FromString(body)
                found.extend(resource_attributes(r.resource) for r in request.resource_metrics)
        return found

    def otlp_spans(self) -> list[Any]:
        """Every span received on /v1/traces (OTLP protobuf ``Span`` objects)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans = []
        for path, body in list(self.requests):
            if path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(scope.spans)
        return spans


def resource_attributes(resource: Any) -> dict[str, str]:
    """The string attributes of an OTLP ``Resource``."""
    return {a.key: a.value.string_value for a in resource.attributes}


def span_attributes(span: Any) -> dict[str, Any]:
    """The attributes of an OTLP ``Span`` (strings and integers)."""
    return {
        a.key: a.value.string_value if a.value.HasField("string_value") else a.value.int_value
        for a in span.attributes
    }


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.thread.start()
    yield c
    c.server.shutdown()
    c.server.server_close()
