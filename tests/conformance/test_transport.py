"""The Transport + Consumer contract, run over every transport adapter
(see tests/conftest.py TRANSPORTS)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from cadre.envelope import Envelope


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
    assert transport.pending() == 0


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
    assert transport.timers() == 1
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
    assert transport.pending() == 0
