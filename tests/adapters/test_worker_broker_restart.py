"""Broker restarts: real `cadre worker` processes on a private RabbitMQ node, which the tests
stop and start again in the middle of a running task.

The shared broker on 5672 serves everything else on the machine and is never restarted; the
node here is tests/support/rabbitmq_node.py's, one for the module, on a port of its own
(it keeps its data across restarts, as a real broker does). PostgreSQL is the shared one,
under a fresh table prefix per test. Every run is checked against what an undisturbed run
gives: the same transcripts, in order, nothing missing and nothing twice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cadre.ids import AgentId
from tests.conftest import POSTGRES_DSN, unavailable, worker_env
from tests.support.rabbitmq_node import RabbitMQNode, private_rabbitmq
from tests.support.worker_app import Ball, Item, make_registry

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitMQNode]:
    """One private RabbitMQ node for the module (it boots in about 5 s here)."""
    with private_rabbitmq() as started:
        yield started


@dataclass
class Run:
    """One test's tables and queue names on the private node, and its worker processes."""

    node: RabbitMQNode
    name: str
    store: object
    transport: object
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, app: str = "tests.support.worker_app", **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "CADRE_APP": app,
            "CADRE_TEST_LOG": "INFO",  # worker_app's level: the reconnect shows in its log
            **worker_env(self.name, PARTITIONS, self.node.url),
            "CADRE_CONCURRENCY": "8",
            "CADRE_RELAY_AFTER_SECONDS": "0.5",
            **extra,
        }

    def start_worker(self, cli: bool = False, **env: str) -> subprocess.Popen[bytes]:
        """A worker process (tests/support/worker_app.py's, or `cadre worker` with the
        app in CADRE_APP); its stderr (its log) goes to a file of this run."""
        app = ["cadre.cli", "worker"] if cli else ["tests.support.worker_app"]
        cmd = [sys.executable, "-m", *app]
        with self.log(len(self.procs)).open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(**env), stderr=err)
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> Path:
        return self.tmp / f"worker-{n}.log"

    def logs(self) -> str:
        return "".join(self.log(n).read_text(errors="replace") for n in range(len(self.procs)))

    async def transcript(self, agent: AgentId) -> list[int]:
        record = await self.store.load(agent)  # type: ignore[attr-defined]
        if record.state is None:
            return []
        cls = make_registry().get(agent.type).cls
        return list(cls.State.model_validate_json(record.state).got)


@pytest.fixture
async def run(node: RabbitMQNode, tmp_path: Path) -> AsyncIterator[Run]:
    from cadre.stores.postgres import PostgresStore
    from cadre.transports.rabbitmq import RabbitMQTransport

    name = f"br{uuid.uuid4().hex[:10]}"
    try:
        store = PostgresStore(POSTGRES_DSN, prefix=f"{name}_", max_size=2)
        await store.migrate()
    except Exception as exc:
        unavailable(f"PostgreSQL: {exc}")
    transport = RabbitMQTransport(node.url, name=name, partitions=PARTITIONS)
    await transport.connect()
    r = Run(node, name, store, transport, tmp_path)
    try:
        yield r
    finally:
        for proc in r.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        await transport.close()  # the queues go with the node's folder
        await store.drop()
        await store.close()


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll `check` every 0.05 s until it holds; fail naming `what` after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


async def restart_broker(node: RabbitMQNode) -> None:
    """Stop the node (SIGTERM: a clean shutdown), keep it down a moment so the workers'
    reconnect attempts fail, and start it again on the same data and port."""
    await asyncio.to_thread(node.stop)
    assert node.leftovers() == [], "a process of the stopped node is still running"
    await asyncio.sleep(1.0)
    await asyncio.to_thread(node.start)


def assert_survived(r: Run) -> None:
    """Every worker lived through the outage (the run could only finish through the
    broker, so it reconnected)."""
    assert all(p.poll() is None for p in r.procs), "a worker exited\n" + r.logs()


# --- through the broker: client -> splitter/1 -> sink/a, sink/b (other partitions) --------


async def test_a_broker_restart_mid_workflow_loses_and_doubles_nothing(run: Run) -> None:
    from cadre.hosts.worker import submit
    from cadre.transports.rabbitmq import partition_of

    splitter, sinks = AgentId("splitter", "1"), [AgentId("sink", "a"), AgentId("sink", "b")]
    parts = {partition_of(str(a), PARTITIONS) for a in [splitter, *sinks]}
    assert len(parts) > 1  # the splitter's sends cross the broker
    n = 120
    for seq in range(n):  # all queued in the broker before the worker starts
        await submit(run.transport, splitter, Item(seq=seq, pause=0.02))  # type: ignore[arg-type]
    run.start_worker()

    async def progressed() -> bool:
        return len(await run.transcript(splitter)) >= 10

    await until(progressed, 30, "the splitter's first items")
    await restart_broker(run.node)
    at_restart = len(await run.transcript(splitter))
    assert at_restart < n, "the run ended before the broker went down"

    async def complete() -> bool:
        return all([len(await run.transcript(a)) >= n for a in [splitter, *sinks]])

    await until(complete, 40, "the workflow after the restart")
    await asyncio.sleep(1.0)  # anything doubled would show up now
    assert await run.transcript(splitter) == list(range(n))
    assert await run.transcript(sinks[0]) == list(range(n))
    assert await run.transcript(sinks[1]) == [seq * 10 for seq in range(n)]
    assert_survived(run)


# --- local delivery: rallies left/<k> <-> right/<k>, one partition each ------------------

RALLIES = ("r0", "r1", "r4", "r5")  # one on each of the 4 partitions


async def test_a_broker_restart_mid_rallies_loses_and_doubles_nothing(run: Run) -> None:
    """Hundreds of steps between agents of one partition, which run without the broker;
    when the broker goes the worker stops starting them, and after the restart the
    redelivered first balls, the flushes and the relay carry every rally on."""
    from cadre.hosts.worker import submit

    length = 200  # 4 x 200 steps
    run.start_worker()
    for key in RALLIES:
        ball = Ball(seq=0, until=length, pause=0.005)
        await submit(run.transport, AgentId("left", key), ball)  # type: ignore[arg-type]

    async def played() -> int:
        got = 0
        for key in RALLIES:
            got += len(await run.transcript(AgentId("left", key)))
            got += len(await run.transcript(AgentId("right", key)))
        return got

    async def under_way() -> bool:
        return await played() >= 40

    await until(under_way, 30, "the rallies' first balls")
    await restart_broker(run.node)
    assert await played() < len(RALLIES) * length, "the rallies ended before the restart"

    async def complete() -> bool:
        return await played() >= len(RALLIES) * length

    await until(complete, 40, "the rallies after the restart")
    await asyncio.sleep(1.0)  # anything doubled would show up now
    for key in RALLIES:
        assert await run.transcript(AgentId("left", key)) == list(range(0, length, 2))
        assert await run.transcript(AgentId("right", key)) == list(range(1, length, 2))
    assert_survived(run)


# --- team tasks on `cadre worker`: the transcripts of an undisturbed in-process run --------


async def test_a_broker_restart_mid_team_tasks_gives_the_undisturbed_transcripts(
    run: Run,
) -> None:
    from cadre.hosts.worker_api import WorkersRuntime
    from cadre.teams.tasks import Tasks
    from tests.support.worker_team import TURNS, team, undisturbed_transcripts

    texts = [f"Plan trip number {i}" for i in range(8)]
    expected = await undisturbed_transcripts(texts)
    assert all(len(t) == TURNS for t in expected)

    tasks = Tasks(WorkersRuntime(run.store, run.transport))  # type: ignore[arg-type]
    ids = [await tasks.submit(team, text) for text in texts]

    async def said() -> int:
        return sum([len(await tasks.messages(i)) for i in ids])

    async def under_way() -> bool:
        return await said() > len(ids)

    run.start_worker(cli=True, CADRE_APP="tests.support.worker_team")
    await until(under_way, 30, "the tasks' first turns")
    await restart_broker(run.node)
    assert await said() < len(ids) * TURNS, "the tasks ended before the restart"

    async def settled() -> bool:
        return all([(await tasks.status(i)).status != "running" for i in ids])

    await until(settled, 40, "the tasks after the restart")
    assert [(await tasks.status(i)).status for i in ids] == ["completed"] * len(ids)
    got = [[(m.source, m.content) for m in await tasks.messages(i)] for i in ids]
    assert got == expected  # nothing lost, nothing said twice, in order
    assert_survived(run)
    logs = run.logs()  # `cadre worker` says when the connection went and came back
    assert "lost the connection to RabbitMQ" in logs, logs
    assert "restored the connection to RabbitMQ" in logs, logs
