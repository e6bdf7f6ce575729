"""`cadre serve --transport rabbitmq --store postgres`: the HTTP API in front of workers.

Real processes: a `cadre worker` runs the steps; `cadre serve` only submits to RabbitMQ and
reads PostgreSQL. Both on this test's own queue name and table prefix.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import worker_env, workers_backend
from tests.e2e.conftest import APP, ROOT, start_serve, wait_for


@pytest.fixture
async def workers_env(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    async with workers_backend(4) as (name, _store, _transport):
        env = {
            **worker_env(name, 4),
            "CADRE_APP": APP,
            "CADRE_HEALTH_FILE": str(tmp_path / "worker.health"),
        }
        yield env


async def test_serve_in_front_of_a_worker_submits_and_reads_while_the_worker_steps(
    workers_env: dict[str, str], tmp_path: Path
) -> None:
    await asyncio.to_thread(serve_a_task_through_a_worker, workers_env, tmp_path)


def serve_a_task_through_a_worker(workers_env: dict[str, str], tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "cadre.cli", "worker"], cwd=ROOT, env={**os.environ, **workers_env}
    )
    server = start_serve(
        tmp_path / "unused.db", "--transport", "rabbitmq", "--store", "postgres", env=workers_env
    )
    try:
        health = httpx.get(f"{server.url}/api/health").json()
        assert health["checks"]["transport"]["ok"], health
        assert "PostgresStore" in health["checks"]["store"]["detail"]
        submitted = httpx.post(
            f"{server.url}/api/tasks", json={"team": "default", "task": "Plan a trip to Porto"}
        )
        assert submitted.status_code == 202, submitted.text
        url = f"{server.url}/api/tasks/{submitted.json()['task_id']}"
        task = wait_for(url, "completed", timeout=40, poll=0.1)
        assert "APPROVE" in task["result"]
        assert set(task["usage_by_agent"]) == {"planner", "writer", "critic"}
        messages = httpx.get(f"{url}/messages").json()
        assert len(messages["messages"]) >= 3
    finally:
        code, out = server.stop()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert code == 0, out
    assert f"workers on RabbitMQ {workers_env['CADRE_QUEUE_NAME']!r}" in out
    assert not (tmp_path / "unused.db").exists()  # the serve process kept no local state


def test_serve_refuses_a_transport_without_its_store(capsys) -> None:  # type: ignore[no-untyped-def]
    from cadre.cli import main

    assert main(["serve", "--transport", "rabbitmq"]) == 2
    assert "--transport rabbitmq goes with --store postgres" in capsys.readouterr().err
