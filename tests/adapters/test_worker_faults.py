"""Worker fault tests: real worker processes, real RabbitMQ, real PostgreSQL.

Each test has its own queue names and table prefix and removes them afterwards. The
workflow is tests/support/worker_app.py: splitter -> sink/a, sink/b, every agent keeping
the list of what it received (the transcript).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cadre.ids import AgentId
from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, workers_backend
from tests.support.worker_app import Ball, Item, make_registry

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@dataclass
class Cluster:
    """One test's broker names, tables, transport and worker processes."""

    name: str
    store: object
    transport: object
    tmp: Path
    procs: list[subprocess.Popen[bytes]]

    def start_worker(self, index: int = 0, count: int = 1, **extra: str) -> subprocess.Popen[bytes]:
        env = self.env(
            CADRE_WORKER_INDEX=str(index),
            CADRE_WORKER_COUNT=str(count),
            CADRE_CONCURRENCY="4",
            CADRE_HEALTH_FILE=str(self.health(len(self.procs))),
            **extra,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker_app"], cwd=ROOT, env=env
        )
        self.procs.append(proc)
        return proc

    def env(self, app: str = "tests.support.worker_app", **extra: str) -> dict[str, str]:
        """The environment of a process on this test's queues and tables."""
        return {
            **os.environ,
            "CADRE_APP": app,
            "CADRE_RABBITMQ_URL": RABBITMQ_URL,
            "CADRE_POSTGRES_URL": POSTGRES_DSN,
            "CADRE_POSTGRES_PREFIX": f"{self.name}_",
            "CADRE_QUEUE_NAME": self.name,
            "CADRE_PARTITIONS": str(PARTITIONS),
            **extra,
        }

    def health(self, n: int) -> Path:
        """The health file of the n-th process started."""
        return self.tmp / f"health-{n}.json"

    def spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        self.procs.append(proc)
        return proc

    async def submit(self, items: list[Item], key: str = "1") -> None:
        from cadre.hosts.worker import submit

        for item in items:
            await submit(self.transport, AgentId("splitter", key), item)  # type: ignore[arg-type]

    async def transcript(self, agent: AgentId) -> list[int]:
        record = await self.store.load(agent)  # type: ignore[attr-defined]
        if record.state is None:
            return []
        return list(make_registry().get(agent.type).cls.State.model_validate_json(record.state).got)

    async def wait_for(self, agent: AgentId, count: int, within: float) -> list[int]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            got = await self.transcript(agent)
            if len(got) >= count or asyncio.get_running_loop().time() > deadline:
                return got
            await asyncio.sleep(0.2)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with workers_backend(PARTITIONS) as (name, store, transport):
        c = Cluster(name, store, transport, tmp_path, [])
        try:
            yield c
        finally:
            for proc in c.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)


SPLITTER = AgentId("splitter", "1")


async def running(c: Cluster, proc: subprocess.Popen[bytes], past: int = 0) -> int:
    """Wait (bounded) until the splitter's transcript grows past `past`; return its length.

    Faults are injected on progress, not after fixed sleeps, so a slow start on a loaded
    machine still puts them in the middle of the run."""
    for _ in range(300):
        assert proc.poll() is None, "the worker died on its own"
        done = len(await c.transcript(SPLITTER))
        if done > past:
            return done
        await asyncio.sleep(0.05)
    raise AssertionError("the worker made no progress in 15 s")


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"rabbitmqctl {args} failed"
    return out.decode()


async def close_worker_connections(name: str) -> int:
    """Close, from the broker's side, the connections of this test's workers only."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    pids = [
        line.split("\t", 1)[0] for line in listing.splitlines() if f'"cadre worker {name} ' in line
    ]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "cadre fault test")
    return len(pids)


def expected(n: int) -> tuple[list[int], list[int], list[int]]:
    return list(range(n)), list(range(n)), [i * 10 for i in range(n)]


async def transcripts(c: Cluster, n: int, within: float) -> tuple[list[int], ...]:
    return (
        await c.wait_for(AgentId("splitter", "1"), n, within),
        await c.wait_for(AgentId("sink", "a"), n, within),
        await c.wait_for(AgentId("sink", "b"), n, within),
    )


async def test_kill_9_at_random_points_loses_and_doubles_nothing(cluster: Cluster) -> None:
    n = 150
    await cluster.submit([Item(seq=i, pause=0.02) for i in range(n)])
    rng = random.Random(8)
    progress = []
    for _ in range(3):
        proc = cluster.start_worker()
        await running(cluster, proc, past=progress[-1] if progress else 0)
        await asyncio.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        progress.append(len(await cluster.transcript(SPLITTER)))
    cluster.start_worker()
    assert await transcripts(cluster, n, 40) == expected(n)
    assert any(0 < p < n for p in progress), progress  # killed mid-run


async def test_a_cut_connection_reconnects_and_the_run_completes(cluster: Cluster) -> None:
    n = 80
    proc = cluster.start_worker()
    await cluster.submit([Item(seq=i, pause=0.03) for i in range(n)])
    await running(cluster, proc)
    assert len(await cluster.transcript(SPLITTER)) < n
    assert await close_worker_connections(cluster.name) >= 1
    assert await transcripts(cluster, n, 40) == expected(n)
    assert proc.poll() is None


async def test_two_workers_never_interleave_one_agents_steps(cluster: Cluster) -> None:
    from cadre.transports.rabbitmq import partition_of

    n = 60
    workers = [cluster.start_worker(0, 2), cluster.start_worker(1, 2)]
    owner = workers[partition_of(str(SPLITTER), PARTITIONS) % 2]
    await cluster.submit([Item(seq=i, pause=0.03) for i in range(n)])
    await running(cluster, owner)
    assert len(await cluster.transcript(SPLITTER)) < n
    owner.send_signal(signal.SIGKILL)  # the standby takes the splitter over mid-stream
    assert await transcripts(cluster, n, 40) == expected(n)


async def test_sigterm_drains_and_exits_0(cluster: Cluster) -> None:
    proc = cluster.start_worker()
    await cluster.submit([Item(seq=i, pause=0.05) for i in range(40)])
    await running(cluster, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    done = await cluster.transcript(AgentId("splitter", "1"))
    assert 0 < len(done) < 40  # stopped mid-run, after finishing what it had started
    cluster.start_worker()
    assert await transcripts(cluster, 40, 30) == expected(40)


async def test_poison_message_is_dead_lettered_and_does_not_block(cluster: Cluster) -> None:
    import aio_pika

    cluster.start_worker()
    await cluster.submit([Item(seq=0), Item(seq=-1), Item(seq=1)])
    channel = await cluster.transport.connection.channel()  # type: ignore[attr-defined]
    await channel.default_exchange.publish(
        aio_pika.Message(b"not an envelope"), routing_key=f"{cluster.name}.p0"
    )
    assert await cluster.wait_for(AgentId("splitter", "1"), 2, 30) == [0, 1]
    dlq = await channel.get_queue(f"{cluster.name}.dlq")
    reasons = {}
    for _ in range(100):
        message = await dlq.get(fail=False)
        if message is None:
            if len(reasons) == 2:
                break
            await asyncio.sleep(0.2)
            continue
        await message.ack()
        reasons[message.headers["x-cadre-reason"]] = message.body
    await channel.close()
    assert set(reasons) == {"handler_failed", "envelope_invalid"}
    assert reasons["envelope_invalid"] == b"not an envelope"
    letters = await cluster.store.list_dead_letters()  # type: ignore[attr-defined]
    assert {d.reason for d in letters} == {"handler_failed", "envelope_invalid"}


async def test_cadre_worker_command_writes_health_and_stops_on_sigterm(cluster: Cluster) -> None:
    health = cluster.tmp / "cli-health.json"
    env = cluster.env(CADRE_HEALTH_FILE=str(health))
    cmd = [sys.executable, "-m", "cadre.cli", "worker", "--partitions", str(PARTITIONS)]
    proc = cluster.spawn(cmd, env)
    for _ in range(100):
        if health.exists() and health.read_text():
            break
        await asyncio.sleep(0.1)
    status = json.loads(health.read_text())
    assert status["connected"] is True and status["pid"] == proc.pid
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert not health.exists()


# --- rallies: left/<k> and right/<k> share a key, so a partition: no broker between them ---

RALLIES = ("r0", "r1", "r4", "r5")  # one on each of the 4 partitions


async def serve(c: Cluster, until: int, pause: float = 0.0) -> None:
    from cadre.hosts.worker import submit

    for key in RALLIES:
        ball = Ball(seq=0, until=until, pause=pause)
        await submit(c.transport, AgentId("left", key), ball)  # type: ignore[arg-type]


async def rallies(c: Cluster, until: int, within: float) -> dict[str, tuple[list[int], ...]]:
    """Every rally's transcripts, once complete (or as they are after `within` s)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = {
            k: (await c.transcript(AgentId("left", k)), await c.transcript(AgentId("right", k)))
            for k in RALLIES
        }
        done = all(len(a) + len(b) >= until for a, b in got.values())
        if done or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.2)


def rallied(until: int) -> dict[str, tuple[list[int], ...]]:
    return {k: (list(range(0, until, 2)), list(range(1, until, 2))) for k in RALLIES}


async def rally_progress(c: Cluster, proc: subprocess.Popen[bytes], past: int) -> int:
    """Wait (bounded) until the rallies have recorded more than `past` balls; return how many."""
    for _ in range(300):
        assert proc.poll() is None, "the worker died on its own"
        done = sum(len(a) + len(b) for a, b in (await rallies(c, 0, 0)).values())
        if done > past:
            return done
        await asyncio.sleep(0.05)
    raise AssertionError("the rallies made no progress in 15 s")


async def test_a_rally_within_one_partition_runs_without_the_broker(cluster: Cluster) -> None:
    until = 40
    proc = cluster.start_worker()
    await serve(cluster, until)
    assert await rallies(cluster, until, 30) == rallied(until)
    local = 0
    for _ in range(50):  # the health file is rewritten every 2 s
        status = json.loads(cluster.health(0).read_text() or "{}")
        local = status.get("handled_local", 0)
        if local >= len(RALLIES) * (until - 1):
            break
        await asyncio.sleep(0.2)
    # every ball but each rally's first (sent by a client, through the broker) ran locally
    assert local == len(RALLIES) * (until - 1)
    assert status["handled"] == len(RALLIES)  # acknowledged broker deliveries: the first balls
    for _ in range(50):  # every outbox is cleared once its envelopes are handled
        left = await cluster.store.stale_outboxes(0.0)  # type: ignore[attr-defined]
        if not left:
            break
        await asyncio.sleep(0.1)
    assert left == []  # so the relay has nothing to republish
    assert status["relayed"] == 0
    assert proc.poll() is None


async def test_kill_9_during_rallies_loses_and_doubles_nothing(cluster: Cluster) -> None:
    """The balls in flight between two agents of one worker exist only in the sender's
    committed outbox when the worker dies; the relay of the next worker publishes them."""
    until = 160
    await serve(cluster, until, pause=0.01)
    rng = random.Random(11)
    progress = [0]
    for _ in range(3):
        proc = cluster.start_worker(CADRE_RELAY_AFTER_SECONDS="0.5")
        progress.append(await rally_progress(cluster, proc, progress[-1]))
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    cluster.start_worker(CADRE_RELAY_AFTER_SECONDS="0.5")
    assert await rallies(cluster, until, 60) == rallied(until)
    assert any(0 < p < len(RALLIES) * until for p in progress[1:]), progress  # killed mid-run


async def test_sigterm_during_rallies_hands_them_to_the_next_worker(cluster: Cluster) -> None:
    """With the relay off, only the stopping worker's flush messages (and the broker's
    redelivery of what it had not acknowledged) can carry the rallies on."""
    until = 120
    proc = cluster.start_worker(CADRE_RELAY_AFTER_SECONDS="0")
    await serve(cluster, until, pause=0.01)
    await rally_progress(cluster, proc, 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    done = await rallies(cluster, 0, 0)
    assert 0 < sum(len(a) + len(b) for a, b in done.values()) < len(RALLIES) * until
    cluster.start_worker(CADRE_RELAY_AFTER_SECONDS="0")
    assert await rallies(cluster, until, 30) == rallied(until)


# --- team tasks: a task's agents share its key, so its turns run inside one worker --------


async def test_kill_9_during_team_tasks_gives_the_transcripts_of_an_undisturbed_run(
    cluster: Cluster,
) -> None:
    from cadre.hosts.worker_api import WorkersRuntime
    from cadre.teams.tasks import Tasks
    from tests.support.worker_team import TURNS, team, undisturbed_transcripts

    texts = [f"Plan trip number {i}" for i in range(6)]
    expected = await undisturbed_transcripts(texts)
    assert all(len(t) == TURNS for t in expected)  # the task, then 15 turns

    tasks = Tasks(WorkersRuntime(cluster.store, cluster.transport))  # type: ignore[arg-type]
    ids = [await tasks.submit(team, text) for text in texts]

    async def said() -> int:
        return sum([len(await tasks.messages(i)) for i in ids])

    env = cluster.env("tests.support.worker_team", CADRE_RELAY_AFTER_SECONDS="0.5")
    cmd = [sys.executable, "-m", "cadre.cli", "worker"]
    rng = random.Random(5)
    progress = [0]
    for _ in range(3):
        proc = cluster.spawn(cmd, env)
        for _ in range(300):  # until the transcripts grow (bounded: 15 s)
            assert proc.poll() is None, "the worker died on its own"
            if (now := await said()) > progress[-1]:
                break
            await asyncio.sleep(0.05)
        progress.append(now)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    cluster.spawn(cmd, env)
    deadline = asyncio.get_running_loop().time() + 60
    while asyncio.get_running_loop().time() < deadline:
        statuses = [(await tasks.status(i)).status for i in ids]
        if all(s != "running" for s in statuses):
            break
        await asyncio.sleep(0.2)
    assert statuses == ["completed"] * len(ids)
    got = [[(m.source, m.content) for m in await tasks.messages(i)] for i in ids]
    assert got == expected  # nothing lost, nothing said twice, in order
    assert any(0 < p < len(ids) * TURNS for p in progress[1:]), progress  # mid-run


async def test_cadre_dlq_lists_and_redrives_the_workers_dead_letters(cluster: Cluster) -> None:
    cluster.start_worker()
    await cluster.submit([Item(seq=-1)])  # fails every time: dead-lettered after 2 attempts
    store = cluster.store
    for _ in range(150):
        letters = await store.list_dead_letters()  # type: ignore[attr-defined]
        if letters:
            break
        await asyncio.sleep(0.1)
    [letter] = letters
    env = cluster.env()

    def cadre(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cadre.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    listed = json.loads(
        await asyncio.to_thread(cadre, "dlq", "list", "--store", "postgres", "--json")
    )
    assert [(d["id"], d["reason"]) for d in listed] == [(letter.id, "handler_failed")]
    shown = json.loads(
        await asyncio.to_thread(cadre, "dlq", "show", "--store", "postgres", letter.id)
    )
    assert "poison item -1" in shown["detail"]
    out = await asyncio.to_thread(cadre, "dlq", "redrive", "--store", "postgres", letter.id)
    assert f"redriven {letter.id}" in out
    for _ in range(150):  # the worker runs it again; it fails again and comes back
        again = await store.list_dead_letters()  # type: ignore[attr-defined]
        if again and again[0].failed_at > letter.failed_at:
            break
        await asyncio.sleep(0.1)
    assert [(d.id, d.reason) for d in again] == [(letter.id, "handler_failed")]
    assert again[0].failed_at > letter.failed_at


async def test_two_workers_a_rally_owner_killed_the_other_takes_its_rallies_over(
    cluster: Cluster,
) -> None:
    from cadre.transports.rabbitmq import partition_of

    until = 160
    owners = {partition_of(f"left/{key}", PARTITIONS) % 2 for key in RALLIES}
    assert owners == {0, 1}  # the rallies are split between the two workers
    relay = {"CADRE_RELAY_AFTER_SECONDS": "0.5"}
    workers = [cluster.start_worker(0, 2, **relay), cluster.start_worker(1, 2, **relay)]
    await asyncio.sleep(1.5)  # past the standby delay: each is the other's standby
    await serve(cluster, until, pause=0.01)
    await rally_progress(cluster, workers[0], 30)
    workers[0].send_signal(signal.SIGKILL)  # its rallies' next balls exist only in outboxes
    workers[0].wait(10)
    at_kill = await rallies(cluster, 0, 0)
    assert sum(len(a) + len(b) for a, b in at_kill.values()) < len(RALLIES) * until
    assert await rallies(cluster, until, 60) == rallied(until)
    assert workers[1].poll() is None
