"""One trace across two processes over a real transport: the test process submits a task
(its send span in the in-memory exporter), a `cadre worker` subprocess runs the team over
RabbitMQ and PostgreSQL and exports its spans over OTLP to a local collector; together
they are one trace whose tree is the message flow."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from cadre import AgentId, telemetry
from cadre.envelope import Envelope, new_id, utcnow
from cadre.inbox import INBOX_TYPE
from cadre.teams.manager import FINISHED, MANAGER_TYPE, TeamState
from cadre.teams.messages import StartTask
from tests.conftest import worker_env, workers_backend

from .conftest import Collector, Otel

ROOT = Path(__file__).resolve().parents[2]
# OTLP span kinds (opentelemetry.proto.trace.v1.Span.SpanKind)
INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5


@dataclass
class Broker:
    name: str
    store: Any
    transport: Any


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with workers_backend(2, letter="o") as (name, store, transport):
        yield Broker(name, store, transport)


def start_worker(broker: Broker, collector: Collector) -> subprocess.Popen[bytes]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS", "CADRE_"))
    }
    env.update(
        {
            "CADRE_APP": "tests.support.traced_team_app",
            **worker_env(broker.name, 2),
            "CADRE_CONCURRENCY": "4",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }
    )
    return subprocess.Popen([sys.executable, "-m", "cadre.cli", "worker"], cwd=ROOT, env=env)


async def submit(broker: Broker, task_id: str) -> Envelope:
    """What a client of the workers does: a send span, its context in the envelope."""
    to = AgentId(MANAGER_TYPE, task_id)
    message = StartTask(team="traced", task="Plan a day in Porto")
    envelope_id, payload = new_id(), message.model_dump(mode="json")
    traceparent = telemetry.current().producer_traceparent(
        "send", message.message_name, str(to), task_id=task_id, envelope_id=envelope_id
    )
    envelope = Envelope(
        id=envelope_id,
        message=message.message_name,
        version=message.message_version,
        payload=payload,
        task_id=task_id,
        recipient=str(to),
        reply_to=f"{INBOX_TYPE}/{task_id}",
        created_at=utcnow(),
        traceparent=traceparent,
    )
    await broker.transport.send([envelope])
    return envelope


async def finished(broker: Broker, task_id: str, within: float = 60.0) -> TeamState:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        record = await broker.store.load(AgentId(MANAGER_TYPE, task_id))
        state = TeamState.model_validate_json(record.state) if record.state else TeamState()
        if state.status in FINISHED or asyncio.get_running_loop().time() > deadline:
            return state
        await asyncio.sleep(0.2)


async def test_a_task_run_by_a_worker_process_is_one_trace_with_the_submitter(
    otel: Otel, collector: Collector, broker: Broker
) -> None:
    worker = start_worker(broker, collector)
    try:
        task_id = new_id()
        await submit(broker, task_id)
        state = await finished(broker, task_id)
        assert state.status == "completed", state
        worker.send_signal(signal.SIGTERM)  # a graceful stop flushes the exporter at exit
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)

    [send] = otel.finished()  # the submitting process
    remote = collector.otlp_spans()  # the worker process
    trace_id = send.context.trace_id.to_bytes(16, "big")
    assert remote and {s.trace_id for s in remote} == {trace_id}
    by_id = {s.span_id: s for s in remote}
    by_id[send.context.span_id.to_bytes(8, "big")] = send
    process = sorted(
        (s for s in remote if s.kind == CONSUMER), key=lambda s: s.start_time_unix_nano
    )
    first = process[0]
    assert first.name == "process cadre.team.StartTask"
    assert first.parent_span_id == send.context.span_id.to_bytes(8, "big")
    for span in process[1:]:  # each step is a child of the step that sent its message
        assert by_id[span.parent_span_id].kind == CONSUMER
    assert not [s for s in remote if s.kind == PRODUCER]  # one span per step (the default)
    agents = [
        next(a.value.string_value for a in s.attributes if a.key == "cadre.agent.type")
        for s in process
    ]
    assert agents[:4] == [MANAGER_TYPE, "tt_writer", MANAGER_TYPE, "tt_critic"]
    names = {s.name for s in remote}
    assert {"chat offline", "execute_tool budget"} <= names
    for span in remote:
        if span.kind in (CLIENT, INTERNAL):
            assert by_id[span.parent_span_id].kind == CONSUMER
    assert send.kind is SpanKind.PRODUCER and send.parent is None
