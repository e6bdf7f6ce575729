"""The Functions Service Bus glue: a real `azure.functions` message in, the processor's
settlement out (return = complete, RetryLater = abandon and redeliver)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadre.envelope import Envelope
from cadre.errors import RetryLater
from cadre.hosts.functions import Received, handle_delivery, received
from cadre.ids import AgentId
from cadre.processing import Disposition, Processor, RetryPolicy
from cadre.step import Step
from cadre.stores.memory import MemoryStore
from tests.support.contracts import make_registry
from tests.support.faults import RecordingTransport

pytestmark = pytest.mark.timeout(20)


def envelope(message: str = "test.Add", payload: dict | None = None, **extra: object) -> Envelope:
    return Envelope(
        id="e1",
        message=message,
        version=1,
        payload=payload if payload is not None else {"amount": 2},
        task_id="t1",
        recipient="counter/a",
        sender="recorder/a",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,  # type: ignore[arg-type]
    )


def functions_message(body: bytes, delivery_count: int | None) -> object:
    func_sb = pytest.importorskip("azure.functions.servicebus")
    return func_sb.ServiceBusMessage(
        body=body,
        message_id="e1",
        session_id="a",
        application_properties={"cadre_agent_type": "counter"},
        user_properties={},
        delivery_count=delivery_count,
        content_type="application/json",
        correlation_id="t1",
    )


def make_processor(store: MemoryStore, max_attempts: int = 3) -> Processor:
    step = Step(store, RecordingTransport(), registry=make_registry())
    return Processor(step, policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.01))


def test_received_reads_body_and_delivery_count() -> None:
    body = envelope().to_bytes()
    assert received(functions_message(body, 3)) == Received(body, 3)
    assert received(functions_message(body, None)) == Received(body, 1)


async def test_handled_delivery_returns_and_saves_the_state() -> None:
    store = MemoryStore()
    message = functions_message(envelope().to_bytes(), 1)
    processed = await handle_delivery(make_processor(store), received(message))
    assert processed.disposition is Disposition.HANDLED
    assert processed.result is not None
    [reply] = processed.result.published
    assert (reply.message, reply.recipient, reply.payload) == (
        "test.Added",
        "recorder/a",
        {"total": 2},
    )
    assert (await store.load(AgentId("counter", "a"))).state == '{"total":2,"failures":0}'


async def test_bad_payload_is_dead_lettered_and_completed_not_retried() -> None:
    store = MemoryStore()
    body = envelope(payload={"amount": "lots"}).to_bytes()
    processed = await handle_delivery(make_processor(store), Received(body, 1))
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert (letter.id, letter.reason, letter.body) == ("e1", "payload_invalid", body)


async def test_unreadable_bytes_are_dead_lettered_with_the_delivery_count() -> None:
    store = MemoryStore()
    processed = await handle_delivery(make_processor(store), Received(b"\x00not json", 2))
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert (letter.reason, letter.attempts, letter.body) == ("envelope_invalid", 2, b"\x00not json")


async def test_failing_handler_raises_retry_later_until_attempts_run_out() -> None:
    store = MemoryStore()
    processor = make_processor(store, max_attempts=3)
    body = envelope(message="test.Fail", payload={"times": 5}).to_bytes()
    for count in (1, 2):
        with pytest.raises(RetryLater, match=f"attempt {count}") as info:
            await handle_delivery(processor, Received(body, count), max_wait=0.05)
        assert info.value.retry_after is not None
    assert await store.list_dead_letters() == []
    processed = await handle_delivery(processor, Received(body, 3))
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert (letter.reason, letter.attempts) == ("handler_failed", 3)


async def test_the_delivery_count_is_the_attempt_the_handler_sees() -> None:
    store = MemoryStore()
    body = envelope(message="test.Fail", payload={"times": 1}).to_bytes()
    processed = await handle_delivery(make_processor(store), Received(body, 2))
    assert processed.disposition is Disposition.HANDLED
    assert "1000" in (await store.load(AgentId("counter", "a"))).state  # type: ignore[operator]
