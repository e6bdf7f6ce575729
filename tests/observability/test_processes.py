"""Every Cadre process exports its telemetry the same way, from the environment.

Real processes and a real OTLP/HTTP exporter: `cadre serve` (in front of two `cadre
worker` processes on RabbitMQ and PostgreSQL, or alone on SQLite) and `cadre run` send
their spans to a receiver in this test, which decodes the protobuf requests. A task
submitted over HTTP is one trace whose root is the request's SERVER span; each process
reports under its own ``service.name``; an endpoint that does not answer costs at most the
exit timeout and one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import worker_env, workers_backend
from tests.e2e.conftest import APP, ROOT, free_port, start_serve, wait_for

from .conftest import Collector, span_attributes

SERVER, CONSUMER = 2, 5  # OTLP span kinds
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without telemetry settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS", "CADRE_"))
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def check_one_trace_per_task(
    spans: list[tuple[str, Any]], task_ids: list[str], steps_by: set[str]
) -> dict[str, list[tuple[str, Any]]]:
    """Each task is one trace: its root is the `POST /api/tasks` SERVER span of
    cadre-api, every other span's parent is in the trace, every step ran in a service of
    `steps_by`. Returns the spans of each trace."""
    traces: dict[bytes, list[tuple[str, Any]]] = defaultdict(list)
    for service, span in spans:
        traces[span.trace_id].append((service, span))
    by_task: dict[str, list[tuple[str, Any]]] = {}
    for trace in traces.values():
        tasks = {
            span_attributes(s).get("messaging.message.conversation_id")
            for _, s in trace
            if s.kind == CONSUMER
        }
        if not tasks:  # a request that started no task (health, status reads)
            continue
        [task] = tasks
        by_task[str(task)] = trace
        ids = {s.span_id for _, s in trace}
        [(root_service, root)] = [(svc, s) for svc, s in trace if not s.parent_span_id]
        assert (root.name, root.kind, root_service) == ("POST /api/tasks", SERVER, "cadre-api")
        assert span_attributes(root)["http.response.status_code"] == 202
        assert all(s.parent_span_id in ids for _, s in trace if s is not root)
        steps = [(svc, s) for svc, s in trace if s.kind == CONSUMER]
        [first] = [s for _, s in steps if s.parent_span_id == root.span_id]
        assert first.name == "process cadre.team.StartTask"
        assert {svc for svc, _ in steps} <= steps_by
        assert any(s.name == "chat offline" for _, s in trace)
    assert sorted(by_task) == sorted(task_ids)
    return by_task


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with workers_backend(4, letter="v") as (name, _store, _transport):
        yield {**worker_env(name, 4), "CADRE_APP": APP}


async def test_a_task_submitted_over_http_to_workers_is_one_trace_from_the_request(
    backend: dict[str, str], collector: Collector, tmp_path: Path
) -> None:
    await asyncio.to_thread(run_through_workers, backend, collector, tmp_path)


def key_for_worker(worker: int, partitions: int = 4, count: int = 2) -> str:
    """An Idempotency-Key whose task lands on partitions of `worker` (of `count`)."""
    from cadre.api._service import task_id_for_key
    from cadre.transports.rabbitmq._topology import partition_of

    for n in range(1000):
        key = f"trace-test-{worker}-{n}"
        if partition_of(f"x/{task_id_for_key(key)}", partitions) % count == worker:
            return key
    raise AssertionError("no key found")


def wait_for_shares(health_files: list[Path], timeout: float = 30.0) -> None:
    """Until every worker hears the others and has released every partition not assigned
    to it (then each partition's owner is next in its queue's line: the hand-over after a
    start is over; an idle queue tells nobody who its active consumer is)."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        states = []
        for path in health_files:
            with contextlib.suppress(OSError, ValueError):
                states.append(json.loads(path.read_text()))
        total = sum(len(s["assigned"]) for s in states)
        if len(states) == len(health_files) and all(
            s["members"] == len(health_files) and s["released"] >= total - len(s["assigned"])
            for s in states
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"the workers did not settle their shares within {timeout} s: {states}")


def run_through_workers(backend: dict[str, str], collector: Collector, tmp_path: Path) -> None:
    common = {**backend, **FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url}
    names = [{}, {"OTEL_SERVICE_NAME": "worker-b"}]  # the default name, and one set
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "cadre.cli", "worker"],
            cwd=ROOT,
            env=clean_env(
                **common,
                **names[i],
                CADRE_WORKER_INDEX=str(i),
                CADRE_WORKER_COUNT="2",
                CADRE_HEALTH_FILE=str(tmp_path / f"w{i}"),
            ),
        )
        for i in range(2)
    ]
    wait_for_shares([tmp_path / f"w{i}" for i in range(2)])  # else a task may change hands
    api_env = {**common, "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci"}
    server = start_serve(
        tmp_path / "unused.db", "--transport", "rabbitmq", "--store", "postgres", env=api_env
    )
    try:
        task_ids = []  # one task for each worker's partitions
        for worker, text in enumerate(("Plan a day in Porto", "Plan a day in Braga")):
            submitted = httpx.post(
                f"{server.url}/api/tasks",
                json={"task": text},
                headers={"Idempotency-Key": key_for_worker(worker)},
                timeout=10,
            )
            assert submitted.status_code == 202, submitted.text
            task_ids.append(submitted.json()["task_id"])
        for task_id in task_ids:
            wait_for(f"{server.url}/api/tasks/{task_id}", "completed", timeout=40, poll=0.1)
    finally:
        code, out = server.stop()
        for worker_process in workers:
            worker_process.send_signal(signal.SIGTERM)
        codes = [worker_process.wait(30) for worker_process in workers]
    assert code == 0 and codes == [0, 0], out
    traces = check_one_trace_per_task(
        collector.otlp_spans_by_service(), task_ids, steps_by={"cadre-worker", "worker-b"}
    )
    # Each task's steps ran in the worker that owns its partition, under that one's name.
    for task_id, service in zip(task_ids, ("cadre-worker", "worker-b"), strict=True):
        assert {svc for svc, s in traces[task_id] if s.kind == CONSUMER} == {service}
    # Every process reports under its own name, with the resource attributes it was given.
    resources = collector.metric_resources()
    assert {r["service.name"] for r in resources} == {"cadre-api", "cadre-worker", "worker-b"}
    api = [r for r in resources if r["service.name"] == "cadre-api"]
    assert all(r["deployment.environment"] == "ci" for r in api)


def test_the_local_serve_exports_one_trace_per_task_rooted_at_the_request(
    collector: Collector, tmp_path: Path
) -> None:
    env = clean_env(**FAST_EXPORT, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    server = start_serve(tmp_path / "cadre.db", env=env)
    try:
        submitted = httpx.post(f"{server.url}/api/tasks", json={"task": "Plan a day"}, timeout=10)
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        wait_for(f"{server.url}/api/tasks/{task_id}", "completed")
    finally:
        code, out = server.stop()
    assert code == 0, out
    [trace] = check_one_trace_per_task(
        collector.otlp_spans_by_service(), [task_id], steps_by={"cadre-api"}
    ).values()
    names = {s.name for _, s in trace}
    assert "GET /api/tasks/{task_id}" not in names  # status reads are traces of their own
    assert not any(s.name.startswith("fastapi.") for _, s in trace)  # one SERVER span only


def cadre_run(state: Path, **env: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cadre.cli", "--app", APP, "--state", str(state), "run", "Hi"],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return time.monotonic() - started, done


def test_an_unreachable_endpoint_costs_at_most_the_exit_timeout_and_one_warning(
    tmp_path: Path,
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    plain, done = cadre_run(tmp_path / "a.db")
    assert done.returncode == 0, done.stderr
    slow, done = cadre_run(tmp_path / "b.db", OTEL_EXPORTER_OTLP_ENDPOINT=closed)
    assert done.returncode == 0, done.stderr
    assert "APPROVE" in done.stdout  # the work was done
    assert slow - plain < 2.0 + 1.5, (plain, slow)  # the 2 s flush, and some start-up noise
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one warning, no retry noise, no traceback
    assert closed in lines[0] and "CADRE_OTEL_EXIT_TIMEOUT" in lines[0]
    _, done = cadre_run(
        tmp_path / "c.db", OTEL_EXPORTER_OTLP_ENDPOINT=closed, CADRE_OTEL_EXIT_TIMEOUT="0.2"
    )
    assert done.returncode == 0 and "within 0.2 s" in done.stderr


def test_cadre_run_exports_as_cadre_cli(collector: Collector, tmp_path: Path) -> None:
    _, done = cadre_run(tmp_path / "a.db", OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    spans = collector.otlp_spans_by_service()
    assert spans and {service for service, _ in spans} == {"cadre-cli"}
    assert len({s.trace_id for _, s in spans}) == 1
    [root] = [s for _, s in spans if not s.parent_span_id]
    assert root.name == "send cadre.team.StartTask"


def test_trace_without_the_sdk_exits_2_with_the_install_line(tmp_path: Path) -> None:
    # The plain install (`pip install -e .`) has the OpenTelemetry API but not the SDK.
    code = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; "
        "sys.modules['opentelemetry.sdk.trace'] = None; "
        "from cadre.cli import main; "
        f"raise SystemExit(main(['--app', {APP!r}, '--state', {str(tmp_path / 'a.db')!r}, "
        f"'run', '--trace', {str(tmp_path / 't.jsonl')!r}, 'Hi']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "--trace needs the OpenTelemetry SDK" in done.stderr
    assert "pip install -e '.[otlp]'" in done.stderr
