"""Quorum queues: a message that kills its worker process goes to the dead-letter queue
after the delivery limit, and queues of an earlier version (classic) are migrated with
their messages when the new code starts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadre.envelope import Envelope
from cadre.ids import AgentId
from tests.adapters.test_rabbitmq import envelope
from tests.conftest import (
    POSTGRES_DSN,
    RABBITMQ_URL,
    unavailable,
    worker_config,
    worker_env,
    workers_backend,
)
from tests.support.crash_app import Blow
from tests.support.worker_app import make_registry

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 2


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, Any, Any]]:
    """A migrated PostgreSQL store and a RabbitMQ transport (delivery limit `LIMIT`) under
    a fresh name; dropped afterwards."""
    async with workers_backend(partitions=2, letter="q", delivery_limit=LIMIT) as parts:
        yield parts


def worker_process(name: str, log: Path) -> subprocess.Popen[bytes]:
    """A `cadre worker` process with the crashing agent (tests/support/crash_app) and the
    delivery limit set by its setting."""
    env = {
        **os.environ,
        **worker_env(name, 2),
        "CADRE_DELIVERY_LIMIT": str(LIMIT),
        "CADRE_APP": "tests.support.crash_app",
    }
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "cadre.cli", "worker"], cwd=ROOT, env=env, stderr=err
        )


async def dead_lettered(transport: Any, within: float) -> list[Any]:
    """The messages of the dead-letter queue (acknowledged), waiting up to `within` s."""
    channel = await transport.connection.channel()
    queue = await channel.get_queue(transport.dlq_name)
    got = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            if got:
                break
            await asyncio.sleep(0.05)
            continue
        await message.ack()
        got.append(message)
    await channel.close()
    return got


async def transcript(store: Any, agent: AgentId) -> list[int]:
    record = await store.load(agent)
    return json.loads(record.state)["got"] if record.state else []


async def test_a_message_that_kills_the_worker_is_dead_lettered_after_the_delivery_limit(
    backend: tuple[str, Any, Any], tmp_path: Path
) -> None:
    """Each delivery of the fatal message ends the worker process (os._exit: no ack); the
    broker counts the deliveries, and past the limit puts it in the dead-letter queue with
    the reason; the next worker stays up and the agent's later messages run."""
    from cadre.hosts.worker import submit

    name, store, transport = backend
    crasher = AgentId("crasher", "k")
    fatal = await submit(transport, crasher, Blow(seq=1, fatal=True))
    log = tmp_path / "worker.log"
    crashes, letters = 0, []
    proc = worker_process(name, log)
    try:
        deadline = time.monotonic() + 60
        while not letters and time.monotonic() < deadline:
            code = proc.poll()
            if code is not None:
                assert code == 3, log.read_text()
                crashes += 1
                assert crashes <= LIMIT + 1, "the fatal message was delivered past the limit"
                proc = worker_process(name, log)
            letters = await dead_lettered(transport, 0.2)
        if proc.poll() is not None:  # the last crash (it ended before the broker saw it)
            assert proc.returncode == 3, log.read_text()
            crashes += 1
            proc = worker_process(name, log)
        assert crashes == LIMIT + 1  # delivered LIMIT + 1 times: returned LIMIT times
        [letter] = letters
        assert Envelope.from_bytes(letter.body).id == fatal.id
        assert letter.headers["x-first-death-reason"] == "delivery_limit"
        assert letter.headers["x-first-death-queue"] == transport.queue_name(
            _partition(crasher, transport)
        )
        await submit(transport, crasher, Blow(seq=2))  # the agent goes on
        deadline = time.monotonic() + 15
        while await transcript(store, crasher) != [2] and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert await transcript(store, crasher) == [2]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0, log.read_text()


def _partition(agent: AgentId, transport: Any) -> int:
    from cadre.transports.rabbitmq import partition_of

    return partition_of(str(agent), transport.partitions)


async def old_topology(name: str, partitions: int, envelopes: list[Envelope]) -> None:
    """What the previous version declared (classic partition queues and delay bucket),
    with `envelopes` in them: due ones in their partition queues, timers in the 2048 ms
    bucket."""
    import aio_pika

    from cadre.transports.rabbitmq import partition_of

    connection = await aio_pika.connect(RABBITMQ_URL)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    delay = await channel.declare_exchange(
        f"{name}.delay", aio_pika.ExchangeType.TOPIC, durable=True
    )
    for i in range(partitions):
        queue = await channel.declare_queue(
            f"{name}.p{i}",
            durable=True,
            arguments={"x-single-active-consumer": True, "x-queue-version": 2},
        )
        await queue.bind(exchange, routing_key=f"#.p{i}")
    bucket = await channel.declare_queue(
        f"{name}.delay.2048",
        durable=True,
        arguments={"x-message-ttl": 2048, "x-dead-letter-exchange": name},
    )
    await bucket.bind(delay, routing_key="d2048.*")
    await channel.declare_queue(f"{name}.dlq", durable=True)
    for env in envelopes:
        part = partition_of(env.recipient or "", partitions)
        message = aio_pika.Message(env.to_bytes(), delivery_mode=2, content_type="application/json")
        if env.not_before is None:
            await channel.default_exchange.publish(message, routing_key=f"{name}.p{part}")
        else:
            await delay.publish(message, routing_key=f"d2048.p{part}")
    await connection.close()


async def test_classic_queues_of_the_previous_version_are_migrated_with_their_messages() -> None:
    """Classic partition queues holding messages, and a timer in a classic delay bucket:
    the new worker's start turns the partition queues into quorum queues, keeping every
    message in order; a new timer for the old timer's bucket migrates the bucket (the old
    timer with it); every envelope runs once, in order, and no temporary queue is left."""
    from cadre.hosts.worker import Worker
    from cadre.stores.postgres import PostgresStore
    from cadre.transports.rabbitmq import RabbitMQTransport
    from cadre.transports.rabbitmq._migrate import Admin

    name = f"m{uuid.uuid4().hex[:10]}"
    agents = [f"sink/{k}" for k in ("a", "b", "c", "d")]
    due = [envelope(agent, seq) for seq in range(30) for agent in agents]
    later = datetime.now(UTC) + timedelta(seconds=3)  # waits in the old bucket meanwhile
    timer = envelope("sink/t", 1, not_before=later)
    try:
        await old_topology(name, 2, [*due, timer])
    except Exception as exc:
        unavailable(f"RabbitMQ: {exc}")
    config = worker_config(
        name,
        2,
        standby_delay=0.0,
        delivery_limit=LIMIT,  # quorum queues
    )
    worker = Worker(config, registry=make_registry())
    await worker.store.migrate()  # type: ignore[attr-defined]
    task = asyncio.create_task(worker.run())
    transport = RabbitMQTransport(RABBITMQ_URL, name=name, partitions=2, delivery_limit=LIMIT)
    try:
        await transport.connect()
        soon = datetime.now(UTC) + timedelta(seconds=2.5)  # the 2048 ms bucket: migrated
        await transport.send([envelope("sink/t", 2, not_before=soon)])
        deadline = time.monotonic() + 20
        expected = {agent: list(range(30)) for agent in agents}
        got: dict[str, list[int]] = {}
        while time.monotonic() < deadline:
            for agent in agents:
                got[agent] = await transcript(worker.store, AgentId.parse(agent))
            timers = sorted(await transcript(worker.store, AgentId("sink", "t")))
            if got == expected and timers == [1, 2]:
                break
            await asyncio.sleep(0.1)
        assert got == expected  # none lost, none doubled, each agent's in order
        assert sorted(await transcript(worker.store, AgentId("sink", "t"))) == [1, 2]
        admin = Admin(transport.connection)
        topology = transport.topology
        for i in range(2):  # quorum now: the quorum declaration is accepted
            assert await admin.declares(topology.queue_name(i), topology.partition_arguments())
            assert not await admin.exists(f"{topology.queue_name(i)}.moving")
        assert await admin.declares(topology.bucket_name(2048), topology.bucket_arguments(2048))
        assert not await admin.exists(f"{topology.bucket_name(2048)}.moving")
        await admin.close()
    finally:
        worker.stop()
        await task
        await transport.delete_topology()
        await transport.close()
        cleanup = PostgresStore(POSTGRES_DSN, prefix=f"{name}_")
        await cleanup.drop()
        await cleanup.close()


async def test_another_delivery_limit_on_existing_queues_is_refused_and_changes_nothing(
    backend: tuple[str, Any, Any],
) -> None:
    """The limit is fixed when a queue is declared: a process with another one is refused
    with the reason, and the queues and their messages stay as they were."""
    from cadre.errors import TransportError
    from cadre.transports.rabbitmq import RabbitMQTransport
    from cadre.transports.rabbitmq._migrate import Admin

    name, _store, transport = backend
    await transport.send([envelope("sink/a", 1)])
    other = RabbitMQTransport(RABBITMQ_URL, name=name, partitions=2, delivery_limit=LIMIT + 1)
    try:
        with pytest.raises(TransportError, match="another delivery limit"):
            await other.connect()
    finally:
        await other.close()
    admin = Admin(transport.connection)
    topology = transport.topology
    for i in range(2):
        assert await admin.declares(topology.queue_name(i), topology.partition_arguments())
        assert not await admin.exists(f"{topology.queue_name(i)}.moving")
    await admin.close()
    assert sum((await transport.queue_depths()).values()) == 1


async def test_a_classic_queue_an_old_worker_still_consumes_is_not_migrated() -> None:
    """The new code refuses to start while a worker of the previous version consumes a
    classic partition queue, saying to stop it; the queue keeps its messages."""
    import aio_pika

    from cadre.errors import TransportError
    from cadre.transports.rabbitmq import RabbitMQTransport

    name = f"m{uuid.uuid4().hex[:10]}"
    try:
        await old_topology(name, 1, [envelope("sink/a", seq) for seq in range(3)])
        old = await aio_pika.connect(RABBITMQ_URL)
    except Exception as exc:
        unavailable(f"RabbitMQ: {exc}")
    channel = await old.channel()
    await channel.set_qos(prefetch_count=1)
    queue = await channel.get_queue(f"{name}.p0")
    held: asyncio.Queue[Any] = asyncio.Queue()
    await queue.consume(held.put)  # holds the first message, unacknowledged
    new = RabbitMQTransport(RABBITMQ_URL, name=name, partitions=1, delivery_limit=LIMIT)
    try:
        with pytest.raises(TransportError, match="still consumed by 1 worker"):
            await new.connect()
    finally:
        await new.close()
    await old.close()  # its unacknowledged message goes back
    check = await aio_pika.connect(RABBITMQ_URL)
    channel = await check.channel()
    kept = await channel.declare_queue(f"{name}.p0", passive=True)
    assert kept.declaration_result.message_count == 3
    for leftover in (f"{name}.p0", f"{name}.p0.moving", f"{name}.delay.2048", f"{name}.dlq"):
        await channel.queue_delete(leftover)
    for exchange in (name, f"{name}.delay"):
        await channel.exchange_delete(exchange)
    await check.close()
