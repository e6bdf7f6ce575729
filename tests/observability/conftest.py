"""The OpenTelemetry SDK with in-memory exporters, installed as Cadre's telemetry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

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
    with telemetry.installed(Telemetry(tracer_provider, meter_provider, capture_content=False)):
        yield Otel(spans, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()
