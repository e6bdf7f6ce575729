"""Every way an envelope can be wrong ends in a dead letter with a reason and the original
bytes; nothing crashes, nothing spins, nothing is dropped silently."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cadre import Agent, Context, Registry, handler
from cadre.envelope import Envelope
from cadre.ids import AgentId
from cadre.processing import Disposition, Processor, RetryPolicy
from cadre.step import Step
from cadre.stores.memory import MemoryStore
from tests.support.contracts import Note, make_registry
from tests.support.faults import RecordingTransport


def envelope_bytes(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "id": "e1",
        "message": "test.Add",
        "version": 1,
        "payload": {"amount": 1},
        "task_id": "t1",
        "recipient": "counter/a",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
    }
    body.update(overrides)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.fixture
def processor(store) -> Processor:  # type: ignore[no-untyped-def]
    step = Step(store, RecordingTransport(), registry=make_registry())
    return Processor(step, policy=RetryPolicy(max_attempts=3, base_delay=0.01))


@pytest.mark.parametrize(
    ("body", "reason", "words"),
    [
        (b"\x00\xffnot json at all", "envelope_invalid", "not a valid envelope"),
        (b'{"id": "e1"}', "envelope_invalid", "message: Field required"),
        (envelope_bytes(recipient=None), "envelope_invalid", "needs a recipient or a topic"),
        (envelope_bytes(recipient="no-slash"), "envelope_invalid", "expected 'type/key'"),
        (envelope_bytes(message="test.Nope"), "unknown_message", "'test.Nope'"),
        (envelope_bytes(version=7), "unsupported_version", "knows versions up to 1"),
        (envelope_bytes(payload={"amount": "lots"}), "payload_invalid", "amount"),
        (envelope_bytes(recipient="ghost/a"), "unknown_agent_type", "'ghost' is not registered"),
        (envelope_bytes(message="test.Broadcast", payload={"text": "x"}), "no_handler", "counter"),
    ],
)
async def test_bad_envelope_is_dead_lettered_with_reason_and_original_bytes(
    processor: Processor, store, body: bytes, reason: str, words: str
) -> None:
    processed = await processor.process(body)
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert letter.reason == reason
    assert words in letter.detail
    if reason == "envelope_invalid":
        assert letter.body == body  # exactly what arrived
    else:
        assert Envelope.from_bytes(letter.body) == Envelope.from_bytes(body)
    assert (await store.load(AgentId("counter", "a"))).etag is None  # the agent was not touched


async def test_topic_only_envelope_is_dead_lettered(processor: Processor, store) -> None:
    processed = await processor.process(envelope_bytes(recipient=None, topic="news/a"))
    assert processed.disposition is Disposition.DEAD_LETTERED
    assert (await store.list_dead_letters())[0].detail == "envelope e1 has no recipient"


async def test_failing_handler_is_retried_with_backoff_then_dead_lettered(processor, store) -> None:  # type: ignore[no-untyped-def]
    body = envelope_bytes(message="test.Fail", payload={"times": 99})
    delays = []
    for attempt in (1, 2):
        processed = await processor.process(body, attempt=attempt)
        assert processed.disposition is Disposition.RETRY
        delays.append(processed.retry_after)
        assert "failing on purpose" in (processed.error or "")
    assert delays[1] > delays[0] > 0  # exponential backoff (jitter is 20%)
    processed = await processor.process(body, attempt=3)
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert letter.reason == "handler_failed"
    assert letter.attempts == 3
    assert "RuntimeError: failing on purpose (attempt 3)" in letter.detail
    assert "Traceback" in letter.extra["traceback"]


async def test_handler_that_recovers_on_a_retry_has_one_effect(processor, store) -> None:  # type: ignore[no-untyped-def]
    body = envelope_bytes(message="test.Fail", payload={"times": 1})
    assert (await processor.process(body, attempt=1)).disposition is Disposition.RETRY
    assert (await processor.process(body, attempt=2)).disposition is Disposition.HANDLED
    assert (await processor.process(body, attempt=3)).disposition is Disposition.DUPLICATE
    record = await store.load(Envelope.from_bytes(body).recipient_id)
    assert json.loads(record.state)["total"] == 1000
    assert await store.list_dead_letters() == []


class Sloppy(Agent):
    @handler
    async def on_note(self, msg: Note, ctx: Context) -> None:
        return "oops"  # type: ignore[return-value]


async def test_a_handler_returning_a_non_message_is_a_failure_not_a_crash() -> None:
    registry = Registry()
    registry.register(Sloppy, type="sloppy")
    store = MemoryStore()
    processor = Processor(
        Step(store, RecordingTransport(), registry=registry), policy=RetryPolicy(max_attempts=1)
    )
    body = envelope_bytes(message="test.Note", payload={"text": "x"}, recipient="sloppy/a")
    processed = await processor.process(body)
    assert processed.disposition is Disposition.DEAD_LETTERED
    assert "returned str" in (await store.list_dead_letters())[0].detail
