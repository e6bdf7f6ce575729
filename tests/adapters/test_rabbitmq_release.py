"""Releasing one partition at the transport: `hold(p)` then `stop_consuming(p)` sends the
acks gathered and closes only that partition's channel, so the broker puts what was
delivered and not acknowledged back in order and only then activates the next single
active consumer. Two `RabbitMQTransport`s on one name stand for two workers (real broker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from cadre.transports.rabbitmq import Delivery, RabbitMQTransport, partition_of
from tests.adapters.test_rabbitmq import envelope, rabbit  # noqa: F401 (fixture)
from tests.conftest import RABBITMQ_URL

PREFETCH = 10
QUIET = 0.3
"""How long a transport that should receive nothing is watched."""


class Inbox:
    """What one transport received: each delivery (one envelope, its seq), by partition, in
    order of arrival, and the partitions `on_active` reported. With `auto_ack`, every
    delivery is acknowledged on arrival."""

    def __init__(self, auto_ack: bool = False) -> None:
        self.auto_ack = auto_ack
        self.deliveries: list[Delivery] = []
        self.activated: list[int] = []

    async def on_delivery(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if self.auto_ack:
            delivery.ack()

    def seqs(self, partition: int) -> list[int]:
        return [seq_of(d) for d in self.deliveries if d.partition == partition]

    async def consume(self, transport: RabbitMQTransport, partition: int) -> None:
        await transport.consume(
            partition, self.on_delivery, prefetch=PREFETCH, on_active=self.activated.append
        )


def seq_of(delivery: Delivery) -> int:
    [(_, env)] = delivery.items  # one envelope per message: sent one `send` each
    assert env is not None
    return int(env.payload["seq"])


def agent_on(partition: int, partitions: int) -> str:
    """A sink agent whose messages go to partition queue `partition`."""
    return next(
        f"sink/r{i}" for i in range(1000) if partition_of(f"sink/r{i}", partitions) == partition
    )


async def send_each(transport: RabbitMQTransport, agent: str, seqs: range) -> None:
    """One AMQP message per envelope (one `send` of many would make them one batch)."""
    for seq in seqs:
        await transport.send([envelope(agent, seq)])


def slow_acks(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.05) -> None:
    """Every ack waits `seconds` before it is written, as behind a busy connection: a
    release that closed the channel without waiting for them would lose them."""
    import aiormq

    basic_ack = aiormq.Channel.basic_ack

    async def slow(self: Any, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(seconds)
        await basic_ack(self, *args, **kwargs)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", slow)


async def until(check: Callable[[], bool], what: str, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def peer(rabbit: Any) -> AsyncIterator[RabbitMQTransport]:  # noqa: F811
    """A second process's transport on `rabbit`'s queues (its own connection)."""
    transport = RabbitMQTransport(RABBITMQ_URL, name=rabbit.name, partitions=rabbit.partitions)
    try:
        await transport.connect()
        yield transport
    finally:
        await transport.close()


async def test_releasing_a_partition_hands_its_unacknowledged_deliveries_on_in_order(
    rabbit: Any,  # noqa: F811
    peer: RabbitMQTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_acks(monkeypatch)
    first, second = Inbox(), Inbox(auto_ack=True)
    p, other = 0, 1
    for part in (p, other):  # `first` consumes first: it is the active consumer of both
        await first.consume(rabbit, part)
        await second.consume(peer, part)
    await send_each(rabbit, agent_on(p, rabbit.partitions), range(20))
    await until(lambda: len(first.seqs(p)) == PREFETCH, "the first prefetch window")
    assert first.seqs(p) == list(range(PREFETCH)) and first.activated == [p]
    assert rabbit.owns(p) and second.seqs(p) == [] and not peer.owns(p)

    for delivery in first.deliveries[:5]:  # gathered, not yet sent: the release sends them
        delivery.ack()
    rabbit.hold(p)
    assert not rabbit.owns(p) and rabbit.held(p)
    await rabbit.stop_consuming(p)
    assert rabbit.consumed() == [other] and not rabbit.held(p) and not rabbit.owns(p)

    await until(lambda: 19 in second.seqs(p), "the handover")  # the last one sent
    await asyncio.sleep(QUIET)  # and nothing after it
    assert second.seqs(p) == list(range(5, 20))  # the unacknowledged first, in order
    assert second.activated == [p] and peer.owns(p)

    await send_each(rabbit, agent_on(other, rabbit.partitions), range(100, 101))
    await until(lambda: first.seqs(other) == [100], "the other partition's delivery")
    assert rabbit.owns(other) and second.seqs(other) == []  # still the first's


async def test_a_released_partition_consumed_again_is_only_standing_by(
    rabbit: Any,  # noqa: F811
    peer: RabbitMQTransport,
) -> None:
    first, second = Inbox(auto_ack=True), Inbox(auto_ack=True)
    p = 2
    agent = agent_on(p, rabbit.partitions)
    await first.consume(rabbit, p)
    await second.consume(peer, p)
    await send_each(rabbit, agent, range(1))
    await until(lambda: first.seqs(p) == [0], "the first delivery")
    rabbit.hold(p)
    await rabbit.stop_consuming(p)

    await first.consume(rabbit, p)  # back in the queue's line, behind `second`
    assert rabbit.consumed() == [p] and not rabbit.held(p)
    await send_each(rabbit, agent, range(1, 11))
    await until(lambda: second.seqs(p) == list(range(1, 11)), "deliveries to the active one")
    await asyncio.sleep(QUIET)
    assert first.seqs(p) == [0] and first.activated == [p]  # none since: a standby
    assert not rabbit.owns(p) and peer.owns(p)


async def test_stopping_without_a_partition_releases_every_partition(
    rabbit: Any,  # noqa: F811
    peer: RabbitMQTransport,
) -> None:
    first, second = Inbox(), Inbox(auto_ack=True)
    parts = list(range(rabbit.partitions))
    for part in parts:
        await first.consume(rabbit, part)
        await second.consume(peer, part)
    for part in parts:
        await send_each(rabbit, agent_on(part, rabbit.partitions), range(part, part + 1))
    await until(lambda: len(first.deliveries) == len(parts), "one delivery per partition")
    assert all(rabbit.owns(part) for part in parts)

    await rabbit.stop_consuming()  # none acknowledged: all three go on
    assert rabbit.consumed() == [] and not any(rabbit.owns(part) for part in parts)
    for part in parts:
        await send_each(rabbit, agent_on(part, rabbit.partitions), range(10 + part, 11 + part))
    await until(lambda: all(10 + part in second.seqs(part) for part in parts), "every handover")
    await asyncio.sleep(QUIET)
    assert [second.seqs(part) for part in parts] == [[part, 10 + part] for part in parts]
    assert sorted(second.activated) == parts and all(peer.owns(part) for part in parts)
    assert len(first.deliveries) == len(parts)  # nothing more came to the first
