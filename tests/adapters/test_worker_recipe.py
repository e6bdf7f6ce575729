"""The README's workers section, followed line by line on a database that does not exist
yet: `cadre db migrate` creates it, two `cadre worker`s say what they serve, `cadre serve
--transport rabbitmq --store postgres` runs a team task through them, a cut broker
connection is one line each for lost, retrying and restored, and SIGTERM makes each say what
it finished. Real processes, the real PostgreSQL and RabbitMQ; the database is dropped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, unavailable
from tests.e2e.conftest import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVER = POSTGRES_DSN.rsplit("/", 1)[0]  # postgresql://postgres@127.0.0.1:5432


def cadre(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cadre.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    with log.open("w") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "cadre.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def wait_for_line(log: Path, pattern: str, within: float = 20) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = log.read_text()
        if re.search(pattern, text):
            return text
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in {log.name}:\n{log.read_text()}")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A database name nobody has created, and the README's environment pointing at it."""
    psycopg = pytest.importorskip("psycopg")
    name = f"cadre_recipe_{uuid.uuid4().hex[:8]}"
    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL: {exc}")
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CADRE_POSTGRES_URL": f"{SERVER}/{name}",
        "CADRE_RABBITMQ_URL": RABBITMQ_URL,
        "CADRE_QUEUE_NAME": name,  # the README's default is `cadre`: ours, on a shared broker
        "CADRE_STATE": str(tmp_path / "unused.db"),
    }
    env.pop("CADRE_APP", None)
    try:
        yield name, env
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import asyncio

        from cadre.transports.rabbitmq import RabbitMQTransport

        async def drop_queues() -> None:
            transport = RabbitMQTransport(RABBITMQ_URL, name=name, partitions=8)
            await transport.connect()
            await transport.delete_topology()
            await transport.close()

        asyncio.run(drop_queues())


def test_the_readme_workers_recipe_works_on_a_fresh_database(
    fresh: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, env = fresh
    started = time.monotonic()
    missing = cadre("worker", env=env, timeout=30)  # before the migration: refused at once
    assert missing.returncode == 2
    assert f"database '{name}' does not exist" in missing.stderr
    assert "cadre db migrate" in missing.stderr and "Traceback" not in missing.stderr
    assert time.monotonic() - started < 10

    migrated = cadre("db", "migrate", env=env)  # the README's `cadre db migrate`
    assert migrated.returncode == 0, migrated.stderr
    assert f"created database '{name}'" in migrated.stdout
    again = cadre("db", "migrate", env=env)  # idempotent
    assert again.returncode == 0 and "created" not in again.stdout

    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [
        spawn(
            "worker",
            env={
                **env,
                "CADRE_WORKER_COUNT": "2",
                "CADRE_WORKER_INDEX": str(i),
                "CADRE_MODEL": "offline:0.1",
            },
            log=logs[i],
        )
        for i in range(2)
    ]
    port = free_port()
    serve_log = tmp_path / "serve.log"
    serve = spawn(
        "serve", "--transport", "rabbitmq", "--store", "postgres", "--port", str(port),
        env=env, log=serve_log,
    )  # fmt: skip
    try:
        for i, log in enumerate(logs):
            text = wait_for_line(log, "started")
            own = "0,2,4,6" if i == 0 else "1,3,5,7"
            assert f"cadre worker {i} of 2 started" in text
            assert f"partitions {own} of 8" in text
            assert f"queues {name}.p0 .. {name}.p7" in text
            assert f"store {SERVER}/{name} (tables cadre_*)" in text
            assert "broker amqp://guest:***@" in text
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        body = {"team": "default", "task": "Plan a three-day trip to Lisbon"}
        submitted = httpx.post(f"{url}/api/tasks", json=body, timeout=10)
        assert submitted.status_code == 202, submitted.text
        task_url = f"{url}/api/tasks/{submitted.json()['task_id']}"
        wait_for(task_url, "running", timeout=30)

        # the broker drops every connection of worker 0 mid-task: three lines, no traceback
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if listing.returncode != 0:
            unavailable("rabbitmqctl (to cut a connection from the broker's side)")
        pids = [
            line.split("\t", 1)[0]
            for line in listing.stdout.splitlines()
            if f'"cadre worker {name} {workers[0].pid}"' in line
        ]
        assert pids, listing.stdout
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "recipe test"],
                timeout=30,
                check=True,
            )
        text = wait_for_line(logs[0], "restored the connection to RabbitMQ")
        task = wait_for(task_url, "completed", timeout=60)
        assert task["stop_reason"] == "critic mentioned 'APPROVE'"
    finally:
        for proc in [*workers, serve]:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in [*workers, serve]]
    assert codes[:2] == [0, 0]
    text = logs[0].read_text()
    assert len(re.findall(r"lost the connection to RabbitMQ at .*recipe test", text)) == 1
    assert len(re.findall(r"retrying the connection to RabbitMQ", text)) == 1
    assert len(re.findall(r"restored the connection to RabbitMQ after", text)) == 1
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text and "ChannelInvalidStateError" not in text, text
        assert re.search(r"stopped after [\d.]+ s: \d+ messages handled", text), text
    handled = sum(
        int(re.search(r"(\d+) messages handled", log.read_text()).group(1))  # type: ignore[union-attr]
        for log in logs
    )
    assert handled > 0


def test_migrate_says_how_to_create_the_database_when_it_may_not(
    fresh: tuple[str, dict[str, str]],
) -> None:
    import psycopg

    name, env = fresh
    role = f"{name}_nocreate"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    try:
        env["CADRE_POSTGRES_URL"] = f"postgresql://{role}@127.0.0.1:5432/{name}"
        done = cadre("db", "migrate", env=env)
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE "{role}"')
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"database '{name}' does not exist and could not be created" in done.stderr
    assert "permission denied" in done.stderr
    assert f"createdb -h 127.0.0.1 -p 5432 -U {role} {name}" in done.stderr


def test_a_worker_on_an_unreachable_server_exits_2_with_the_reason(
    fresh: tuple[str, dict[str, str]],
) -> None:
    _, env = fresh
    env["CADRE_POSTGRES_URL"] = f"postgresql://postgres@127.0.0.1:{free_port()}/cadre"
    done = cadre("worker", env=env)
    assert done.returncode == 2
    assert "cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
