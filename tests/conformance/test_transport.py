"""The Transport + Consumer contract, run over every transport adapter: the in-process
transport (with and without its journal, see tests/conftest.py TRANSPORTS) and RabbitMQ
(`RabbitMQConsumer` over a fresh vhost-like name per test: its own exchanges and queues,
deleted afterwards; a missing broker skips locally and fails in CI)."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadre.envelope import Envelope
from cadre.transports.base import Delivery
from tests.conftest import RABBITMQ_URL, TRANSPORTS, unavailable


class RabbitMQHarness:
    """`RabbitMQTransport` + `RabbitMQConsumer` with the in-process transport's test
    surface: `pending()` counts the ids sent here and not yet acknowledged, `timers()` the
    messages waiting in the broker's delay buckets, `wait_idle()` waits for no pending."""

    def __init__(self, transport: Any, consumer: Any) -> None:
        self.transport, self.consumer = transport, consumer
        self._sent: set[str] = set()
        self._acked: set[str] = set()

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        self._sent.update(e.id for e in envelopes)
        await self.transport.send(envelopes)

    async def receive(self) -> Delivery:
        return await self.consumer.receive()  # type: ignore[no-any-return]

    async def ack(self, delivery: Delivery) -> None:
        await self.consumer.ack(delivery)
        self._acked.add(delivery.envelope.id)

    async def retry(self, delivery: Delivery, delay: float) -> None:
        await self.consumer.retry(delivery, delay)

    def pending(self) -> int:
        return len(self._sent - self._acked)

    async def timers(self) -> int:
        depths = await self.transport.queue_depths()
        return sum(n for name, n in depths.items() if ".delay." in name)

    async def wait_idle(self) -> None:
        while self.pending():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
async def rabbitmq_transport() -> AsyncIterator[RabbitMQHarness]:
    try:
        from cadre.transports.rabbitmq import RabbitMQConsumer, RabbitMQTransport

        name = f"c{uuid.uuid4().hex[:10]}"
        transport = RabbitMQTransport(RABBITMQ_URL, name=name, partitions=2)
        await transport.connect()
    except Exception as exc:
        unavailable(f"RabbitMQ: {exc}")
    consumer = RabbitMQConsumer(transport)
    await consumer.start()
    yield RabbitMQHarness(transport, consumer)
    await consumer.close()
    await transport.delete_topology()
    await transport.close()


@pytest.fixture(params=[*TRANSPORTS, "rabbitmq"])
def transport(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every transport adapter (with its consumer side), by name."""
    return request.getfixturevalue(f"{request.param}_transport")


async def settled(value: Any) -> Any:
    """`value`, awaited if the adapter's test surface is async."""
    return await value if inspect.isawaitable(value) else value


def envelope(i: int, recipient: str = "recorder/a", **extra: object) -> Envelope:
    return Envelope(
        id=f"e-{recipient}-{i}",
        message="test.Note",
        version=1,
        payload={"text": str(i)},
        task_id="t1",
        recipient=recipient,
        created_at=datetime.now(UTC),
        **extra,  # type: ignore[arg-type]
    )


async def receive(transport):  # type: ignore[no-untyped-def]
    return await asyncio.wait_for(transport.receive(), 2.0)


async def test_envelopes_for_one_recipient_arrive_in_order(transport) -> None:
    await transport.send([envelope(i) for i in range(20)])
    got = []
    for _ in range(20):
        delivery = await receive(transport)
        got.append(delivery.envelope.payload["text"])
        await transport.ack(delivery)
    assert got == [str(i) for i in range(20)]


async def test_one_envelope_in_flight_per_recipient(transport) -> None:
    await transport.send([envelope(1), envelope(2), envelope(1, "recorder/b")])
    first = await receive(transport)
    other = await receive(transport)
    assert {first.envelope.recipient, other.envelope.recipient} == {"recorder/a", "recorder/b"}
    # recorder/a's second envelope waits until its first is acknowledged.
    blocked = asyncio.ensure_future(transport.receive())
    await asyncio.sleep(0.05)
    assert not blocked.done()
    await transport.ack(first if first.envelope.recipient == "recorder/a" else other)
    second = await asyncio.wait_for(blocked, 2)
    assert second.envelope.id == "e-recorder/a-2"


async def test_sending_the_same_id_twice_before_ack_delivers_once(transport) -> None:
    await transport.send([envelope(1)])
    await transport.send([envelope(1)])
    delivery = await receive(transport)
    await transport.ack(delivery)
    assert await settled(transport.pending()) == 0


async def test_retry_redelivers_first_with_attempt_raised(transport) -> None:
    await transport.send([envelope(1), envelope(2)])
    first = await receive(transport)
    await transport.retry(first, 0.05)
    again = await receive(transport)
    assert again.envelope.id == first.envelope.id
    assert again.envelope.attempt == 2
    await transport.ack(again)
    following = await receive(transport)
    assert following.envelope.id == "e-recorder/a-2"


async def test_not_before_is_honoured(transport) -> None:
    due = datetime.now(UTC) + timedelta(seconds=0.3)
    started = time.monotonic()
    await transport.send([envelope(1, not_before=due)])
    assert await settled(transport.timers()) == 1
    delivery = await receive(transport)
    assert time.monotonic() - started >= 0.25
    await transport.ack(delivery)


async def test_wait_idle_waits_for_every_ack(transport) -> None:
    await transport.send([envelope(1), envelope(2)])

    async def consume() -> None:
        for _ in range(2):
            delivery = await receive(transport)
            await asyncio.sleep(0.01)
            await transport.ack(delivery)

    task = asyncio.create_task(consume())
    await asyncio.wait_for(transport.wait_idle(), 2)
    assert task.done()
    assert await settled(transport.pending()) == 0
