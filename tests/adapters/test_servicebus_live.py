"""Service Bus transport against a real namespace (never run on this machine: no Service Bus
can run here). Runs when CADRE_TEST_SERVICEBUS holds a connection string; the topic
(CADRE_TEST_SERVICEBUS_TOPIC, default ``cadre``) needs a session-enabled subscription
(CADRE_TEST_SERVICEBUS_SUBSCRIPTION, default ``counter``) that receives ``counter`` messages.
Skipped otherwise, in CI too: no namespace exists there."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cadre.envelope import Envelope, utcnow

CONNECTION = os.environ.get("CADRE_TEST_SERVICEBUS", "")
TOPIC = os.environ.get("CADRE_TEST_SERVICEBUS_TOPIC", "cadre")
SUBSCRIPTION = os.environ.get("CADRE_TEST_SERVICEBUS_SUBSCRIPTION", "counter")

pytestmark = [
    pytest.mark.servicebus_live,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not CONNECTION, reason="CADRE_TEST_SERVICEBUS is not set"),
]


def envelope(key: str, n: int, **extra: object) -> Envelope:
    return Envelope(
        id=f"{key}-{n}",
        message="test.Add",
        version=1,
        payload={"amount": n},
        task_id="live",
        recipient=f"counter/{key}",
        created_at=datetime.now(UTC),
        **extra,  # type: ignore[arg-type]
    )


async def receive(key: str, count: int) -> list[object]:
    from azure.servicebus.aio import ServiceBusClient

    got: list[object] = []
    async with (
        ServiceBusClient.from_connection_string(CONNECTION) as client,
        client.get_subscription_receiver(
            TOPIC, SUBSCRIPTION, session_id=key, max_wait_time=20
        ) as receiver,
    ):
        while len(got) < count:
            batch = await receiver.receive_messages(max_message_count=count, max_wait_time=20)
            if not batch:
                break
            for message in batch:
                await receiver.complete_message(message)
            got.extend(batch)
    return got


async def test_sent_envelopes_arrive_in_order_in_their_session() -> None:
    from cadre.transports.servicebus import ServiceBusTransport

    key = uuid.uuid4().hex
    transport = ServiceBusTransport(topic=TOPIC, connection_string=CONNECTION, send_timeout=30)
    sent = [envelope(key, n) for n in range(3)]
    try:
        await transport.send(sent)
        await transport.send(sent[:1])  # the same id again: duplicate detection drops it
    finally:
        await transport.close()
    got = await asyncio.wait_for(receive(key, 3), 60)
    assert [m.message_id for m in got] == [e.id for e in sent]  # type: ignore[attr-defined]
    first = got[0]
    assert first.session_id == key  # type: ignore[attr-defined]
    assert first.application_properties[b"cadre_agent_type"] == b"counter"  # type: ignore[attr-defined]
    assert Envelope.from_bytes(b"".join(first.body)) == sent[0]  # type: ignore[attr-defined]


async def test_not_before_is_honoured_by_the_broker() -> None:
    from cadre.transports.servicebus import ServiceBusTransport

    key = uuid.uuid4().hex
    due = utcnow() + timedelta(seconds=10)
    transport = ServiceBusTransport(topic=TOPIC, connection_string=CONNECTION, send_timeout=30)
    try:
        await transport.send([envelope(key, 1, not_before=due)])
    finally:
        await transport.close()
    got = await asyncio.wait_for(receive(key, 1), 60)
    assert got and utcnow() >= due
