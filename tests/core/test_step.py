"""The agent step's guarantees: one effect per envelope, whatever crashes and races."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from cadre.envelope import Envelope, derive_id, new_id
from cadre.errors import ConcurrencyConflict
from cadre.ids import AgentId
from cadre.processing import Disposition, Processor
from cadre.step import Outcome, Step, Window
from cadre.stores.base import AgentRecord
from cadre.stores.memory import MemoryStore
from tests.support.contracts import make_registry
from tests.support.faults import Crash, CrashingStore, RecordingTransport

COUNTER = AgentId("counter", "a")


def add(amount: int, env_id: str | None = None) -> Envelope:
    return Envelope(
        id=env_id or new_id(),
        message="test.Add",
        version=1,
        payload={"amount": amount},
        task_id="task-1",
        recipient=str(COUNTER),
        reply_to="recorder/a",
        created_at=datetime.now(UTC),
    )


def total(record_state: str | None) -> int:
    return int(json.loads(record_state or '{"total": 0}')["total"])


async def test_first_delivery_changes_state_and_publishes_reply(store) -> None:
    sent = RecordingTransport()
    step = Step(store, sent, registry=make_registry())
    result = await step(add(5, "e1"))
    assert result.outcome is Outcome.HANDLED
    record = await store.load(COUNTER)
    assert total(record.state) == 5
    assert Window(record.seen).ids == ("e1",)
    assert record.outbox == ()  # published, then cleared
    [reply] = sent.sent
    assert reply.id == derive_id("e1", 0)
    assert (reply.recipient, reply.message, reply.payload) == (
        "recorder/a",
        "test.Added",
        {"total": 5},
    )
    assert (reply.sender, reply.causation_id, reply.task_id) == ("counter/a", "e1", "task-1")


async def test_redelivered_envelope_has_one_effect(store) -> None:
    sent = RecordingTransport()
    step = Step(store, sent, registry=make_registry())
    envelope = add(5, "e1")
    assert (await step(envelope)).outcome is Outcome.HANDLED
    assert (await step(envelope)).outcome is Outcome.DUPLICATE
    assert total((await store.load(COUNTER)).state) == 5
    assert len(sent.sent) == 1


@pytest.mark.parametrize("point", ["before_save", "after_save", "before_clear"])
async def test_crash_at_any_point_then_redelivery_loses_and_doubles_nothing(store, point) -> None:
    sent = RecordingTransport()
    registry = make_registry()
    crashing = Step(CrashingStore(store, point=point), sent, registry=registry)
    envelope = add(5, "e1")
    with pytest.raises(Crash):
        await crashing(envelope)
    # The process restarts: a fresh step on the same store gets the envelope again.
    step = Step(store, sent, registry=registry)
    await step(envelope)
    await step(envelope)  # and once more, for good measure
    record = await store.load(COUNTER)
    assert total(record.state) == 5
    assert Window(record.seen).ids == ("e1",)
    assert record.outbox == ()
    assert sent.unique_ids() == [derive_id("e1", 0)]  # the reply, under one id only


async def test_crash_after_save_is_healed_by_the_next_envelope_too(store) -> None:
    """A different envelope arriving first still publishes the stranded outbox."""
    sent = RecordingTransport()
    registry = make_registry()
    with pytest.raises(Crash):
        await Step(CrashingStore(store, point="after_save"), sent, registry=registry)(add(1, "e1"))
    assert sent.sent == []
    step = Step(store, sent, registry=registry)
    await step(add(2, "e2"))
    assert sent.unique_ids() == [derive_id("e1", 0), derive_id("e2", 0)]
    assert [e.payload["total"] for e in sent.sent] == [1, 3]
    await step(add(1, "e1"))  # the late redelivery of e1 changes nothing
    assert total((await store.load(COUNTER)).state) == 3


class PausingStore:
    """Lets two steps load the same version before either saves."""

    def __init__(self, inner, loads_before_release: int) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.waiting = loads_before_release
        self.released = asyncio.Event()

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    async def load(self, agent_id):  # type: ignore[no-untyped-def]
        record = await self.inner.load(agent_id)
        if self.waiting > 0:
            self.waiting -= 1
            if self.waiting == 0:
                self.released.set()
            await self.released.wait()
        return record


async def test_racing_steps_one_conflicts_then_retries_and_no_update_is_lost(store) -> None:
    registry = make_registry()
    paused = PausingStore(store, loads_before_release=2)
    step = Step(paused, RecordingTransport(), registry=registry)
    results = await asyncio.gather(step(add(1)), step(add(10)), return_exceptions=True)
    assert sum(isinstance(r, ConcurrencyConflict) for r in results) == 1
    assert total((await store.load(COUNTER)).state) in (1, 10)

    # Through the processor the loser reloads and redoes its step.
    paused = PausingStore(store, loads_before_release=2)
    processor = Processor(Step(paused, RecordingTransport(), registry=registry))
    outcomes = await asyncio.gather(processor.process(add(100)), processor.process(add(1000)))
    assert [o.disposition for o in outcomes] == [Disposition.HANDLED, Disposition.HANDLED]
    assert total((await store.load(COUNTER)).state) in (1101, 1110)


async def test_seen_ids_are_bounded(store) -> None:
    step = Step(store, RecordingTransport(), registry=make_registry(), seen_limit=3)
    for i in range(5):
        await step(add(1, f"e{i}"))
    assert Window((await store.load(COUNTER)).seen).ids == ("e2", "e3", "e4")
    assert [await store.was_evicted(COUNTER, f"e{i}") for i in range(5)] == [True, True] + [
        False
    ] * 3


async def test_publish_reaches_every_subscriber_but_the_publisher() -> None:
    store, sent = MemoryStore(), RecordingTransport()
    step = Step(store, sent, registry=make_registry())
    note = Envelope(
        id="n1",
        message="test.Note",
        version=1,
        payload={"text": "hi"},
        task_id="t",
        recipient="announcer/room",
        created_at=datetime.now(UTC),
    )
    await step(note)
    assert sorted(e.recipient for e in sent.sent) == ["listener/room", "recorder/room"]
    assert {e.topic for e in sent.sent} == {"news/room"}
    assert len({e.id for e in sent.sent}) == 2


def fail(times: int, env_id: str) -> Envelope:
    return add(0, env_id).model_copy(update={"message": "test.Fail", "payload": {"times": times}})


async def test_several_envelopes_as_one_step_store_what_one_step_each_would(store) -> None:
    """run_many: one save, and the state, seen ids, replies (ids and totals) and order that
    running the same envelopes one by one (redeliveries included) gives."""
    envelopes = [add(1, "e1"), add(2, "e2"), add(3, "e1"), add(4, "e3"), fail(0, "e4")]
    one_by_one, one_sent = MemoryStore(), RecordingTransport()
    single = Step(one_by_one, one_sent, registry=make_registry())
    for envelope in envelopes:
        await single(envelope)
    sent, saves = RecordingTransport(), []

    class CountingSaves:
        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(store, name)

        async def save(self, record, *, if_match):  # type: ignore[no-untyped-def]
            saves.append(Window(record.seen).ids)
            return await store.save(record, if_match=if_match)

    step = Step(CountingSaves(), sent, registry=make_registry())  # type: ignore[arg-type]
    results = await step.run_many(envelopes)
    assert saves == [("e1", "e2", "e3", "e4")]  # one write for the five
    assert [r.outcome for r in results] == [Outcome.HANDLED] * 2 + [Outcome.DUPLICATE] + [
        Outcome.HANDLED
    ] * 2
    together, alone = await store.load(COUNTER), await one_by_one.load(COUNTER)
    assert (json.loads(together.state or ""), together.seen, together.outbox) == (
        json.loads(alone.state or ""),
        alone.seen,
        (),
    )
    assert total(together.state) == 1007 and Window(together.seen).ids == ("e1", "e2", "e3", "e4")
    assert [(e.id, e.payload) for e in sent.sent] == [(e.id, e.payload) for e in one_sent.sent]
    assert results[0].published == tuple(sent.sent)  # every place confirms the whole outbox
    # delivered again, all of them: duplicates, no second effect
    again = await step.run_many(envelopes)
    assert {r.outcome for r in again} == {Outcome.DUPLICATE}
    assert total((await store.load(COUNTER)).state) == 1007 and len(sent.sent) == 3


async def test_a_failing_handler_among_several_saves_nothing_and_they_go_one_by_one(store) -> None:
    sent = RecordingTransport()
    processor = Processor(Step(store, sent, registry=make_registry()))
    envelopes = [add(1, "e1"), fail(1, "e2"), add(2, "e3")]
    assert await processor.process_many(envelopes) is None
    assert (await store.load(COUNTER)).etag is None and sent.sent == []  # nothing happened
    outcomes = [await processor.process(e) for e in envelopes]  # as the worker then does
    assert [o.disposition for o in outcomes] == [
        Disposition.HANDLED,
        Disposition.RETRY,
        Disposition.HANDLED,
    ]
    assert total((await store.load(COUNTER)).state) == 3


async def test_a_step_of_several_refuses_more_than_seen_limit_or_two_recipients(store) -> None:
    step = Step(store, RecordingTransport(), registry=make_registry(), seen_limit=2)
    with pytest.raises(ValueError, match="seen_limit"):
        await step.run_many([add(1), add(1), add(1)])
    other = add(1).model_copy(update={"recipient": "counter/b"})
    with pytest.raises(Exception, match="one recipient"):
        await step.run_many([add(1), other])
    assert await Processor(step).process_many([add(1), other]) is None


class CountingLookups:
    """A store that counts `was_evicted` calls (the one read a late arrival costs)."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.store, self.lookups = store, 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, name)

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        self.lookups += 1
        return bool(await self.store.was_evicted(agent_id, envelope_id))


# How many newer messages arrive before the redelivery: the 10,000 where a step
# costs microseconds; the local Cosmos DB server takes ~5 ms a step (the same evictions,
# a few of them, are what the test proves there).
NEWER = {"memory": 10_000, "sqlite": 10_000, "postgres": 10_000, "cosmos": 300}


async def test_a_redelivery_after_ten_thousand_newer_messages_has_no_effect(store, request) -> None:
    newer = NEWER[request.node.callspec.params["store"]]
    counting = CountingLookups(store)
    sent = RecordingTransport()
    step = Step(counting, sent, registry=make_registry())  # type: ignore[arg-type]
    first = add(1_000_000, "first")
    assert (await step(first)).outcome is Outcome.HANDLED
    late = add(500_000, "late")  # made now, delivered last: new, however late
    for n in range(newer):
        await step(add(1, f"n{n}"))
    assert counting.lookups == 0  # every newer message was newer than the floor
    assert (await step(first)).outcome is Outcome.DUPLICATE
    assert (await step(late)).outcome is Outcome.HANDLED
    assert (await step(late)).outcome is Outcome.DUPLICATE  # in `seen` now
    record = await store.load(COUNTER)
    assert total(record.state) == 1_500_000 + newer
    assert counting.lookups == 2  # the two late arrivals, and nothing else
    assert [e.id for e in sent.sent].count(derive_id("first", 0)) == 1


async def test_run_many_drops_a_redelivery_that_left_seen(store) -> None:
    step = Step(store, RecordingTransport(), registry=make_registry(), seen_limit=4)
    first = add(7, "first")
    await step(first)
    for n in range(10):
        await step(add(1, f"n{n}"))
    results = await step.run_many([add(2, "a"), first, add(3, "b")])
    assert [r.outcome for r in results] == [Outcome.HANDLED, Outcome.DUPLICATE, Outcome.HANDLED]
    assert total((await store.load(COUNTER)).state) == 7 + 10 + 5
    results = await step.run_many([first])
    assert [r.outcome for r in results] == [Outcome.DUPLICATE]


async def test_a_record_written_before_floors_keeps_its_ids_and_gains_a_floor() -> None:
    """A record of an earlier version: `seen` holds ids only (no floor element)."""
    store = MemoryStore()
    await store.save(
        AgentRecord(COUNTER, state='{"total": 5}', seen=tuple(f"old{i}" for i in range(64))),
        if_match=None,
    )
    step = Step(store, RecordingTransport(), registry=make_registry())
    old = add(5, "old3")
    assert (await step(old)).outcome is Outcome.DUPLICATE
    for n in range(40):
        await step(add(1, f"n{n}"))
    window = Window((await store.load(COUNTER)).seen)
    assert window.floor > old.created_at.timestamp() and "old3" not in window.ids
    assert (await step(old)).outcome is Outcome.DUPLICATE  # evicted, found in the store
    assert total((await store.load(COUNTER)).state) == 45


def test_no_envelope_id_can_look_like_the_floor_element() -> None:
    with pytest.raises(ValueError):
        add(1, "\t-inf\t1.0")
