"""The Application Insights workbook queries only metrics and dimensions Cadre emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from cadre import AgentId, LocalRuntime, telemetry
from cadre.telemetry import ATTRIBUTE_NAMES, METRIC_NAMES, Telemetry
from tests.support.contracts import Add, make_registry

WORKBOOK = Path(__file__).resolve().parents[2] / "infra" / "workbook.json"


def queries() -> list[str]:
    book = json.loads(WORKBOOK.read_text())
    return [item["content"]["query"] for item in book["items"] if item["type"] == 3]


def queried_metrics() -> set[str]:
    names: set[str] = set()
    for query in queries():
        for clause in re.findall(r"name (?:==|in) \(?([^)\n]+)\)?", query):
            names.update(re.findall(r'"([^"]+)"', clause))
    return names


def queried_dimensions() -> set[str]:
    return {d for q in queries() for d in re.findall(r'customDimensions\["([^"]+)"\]', q)}


def test_the_workbook_has_the_panels_the_dashboards_need() -> None:
    titles = " ".join(
        json.loads(WORKBOOK.read_text())["items"][i]["content"].get("title", "")
        for i in range(len(queries()) + 1)
    )
    for panel in ("Messages processed", "dead letters", "P50 / P95 / P99", "Tokens", "Tasks"):
        assert panel in titles


def test_every_metric_and_dimension_the_workbook_queries_is_declared() -> None:
    assert queried_metrics() and queried_dimensions()
    assert queried_metrics() - {n for n in METRIC_NAMES} == set()
    assert queried_dimensions() - ATTRIBUTE_NAMES == set()


async def test_every_metric_the_workbook_queries_is_really_emitted() -> None:
    reader = InMemoryMetricReader()
    tel = Telemetry(TracerProvider(), MeterProvider(metric_readers=[reader]))
    with telemetry.installed(tel):
        async with LocalRuntime(registry=make_registry()) as rt:
            await rt.send(AgentId("counter", "a"), Add(amount=1))
            await rt.send(AgentId("nobody", "a"), Add(amount=1))  # a dead letter
            await rt.run_until_idle()
        with tel.model_span("gpt-4o", agent_type="assistant") as span:
            tel.record_tokens(
                span, model="gpt-4o", input_tokens=7, output_tokens=3, agent_type="assistant"
            )
        tel.record_task("completed", 1.5, team="demo")
    data = reader.get_metrics_data()
    emitted: dict[str, set[str]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                dims = emitted.setdefault(metric.name, set())
                for point in metric.data.data_points:
                    dims.update(point.attributes or {})
    assert queried_metrics() <= set(emitted)
    for query in queries():
        metrics = {
            m
            for clause in re.findall(r"name (?:==|in) \(?([^)\n]+)\)?", query)
            for m in re.findall(r'"([^"]+)"', clause)
        }
        if metrics:
            used = set(re.findall(r'customDimensions\["([^"]+)"\]', query))
            assert used <= set().union(*(emitted[m] for m in metrics)), (metrics, used)
