"""An agent's append-only log under the step's guarantee: a crash at any point of the append
path loses no entry, doubles none and keeps the order, in every store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from cadre import Agent, AgentId, Context, Registry, handler
from cadre.envelope import Envelope
from cadre.step import Step
from tests.support.contracts import Add, Added
from tests.support.faults import Crash, CrashingStore, RecordingTransport

CHRONICLE = AgentId("chronicle", "c")


class Chronicle(Agent):
    """Logs every amount twice (two entries a step) and replies with the count."""

    class State(BaseModel):
        entries: int = 0

    @handler
    async def add(self, msg: Add, ctx: Context) -> Added:
        for part in ("a", "b"):
            ctx.append_log(self.state.entries, json.dumps({"amount": msg.amount, "part": part}))
            self.state.entries += 1
        return Added(total=self.state.entries)


def registry() -> Registry:
    reg = Registry()
    reg.register(Chronicle, type="chronicle")
    return reg


def add(amount: int) -> Envelope:
    return Envelope(
        id=f"e{amount}",
        message="test.Add",
        version=1,
        payload={"amount": amount},
        task_id="task-1",
        recipient=str(CHRONICLE),
        reply_to="recorder/c",
        created_at=datetime.now(UTC),
    )


async def logged(store) -> list[tuple[int, int, str]]:  # type: ignore[no-untyped-def]
    entries = await store.read_log(str(CHRONICLE), 0, 1000)
    return [(e.seq, json.loads(e.data)["amount"], json.loads(e.data)["part"]) for e in entries]


def expected(*amounts: int) -> list[tuple[int, int, str]]:
    return [(2 * i + j, a, p) for i, a in enumerate(amounts) for j, p in enumerate("ab")]


@pytest.mark.parametrize("point", ["before_save", "after_save", "before_clear"])
async def test_a_crash_at_any_point_of_the_append_path_loses_and_doubles_no_entry(
    store, point
) -> None:
    sent, reg = RecordingTransport(), registry()
    step = Step(store, sent, registry=reg)
    await step(add(1))
    with pytest.raises(Crash):
        await Step(CrashingStore(store, point=point), sent, registry=reg)(add(2))
    await step(add(2))  # the redelivery after the restart
    await step(add(2))  # and once more
    await step(add(3))
    assert await logged(store) == expected(1, 2, 3)
    assert (await store.load(CHRONICLE)).log == ()


async def test_entries_of_a_step_of_several_are_those_of_one_step_each(store) -> None:
    reg = registry()
    await Step(store, RecordingTransport(), registry=reg).run_many([add(1), add(2), add(3)])
    assert await logged(store) == expected(1, 2, 3)


async def test_cosmos_a_death_between_the_record_and_its_entries_is_healed_by_the_next_load(
    cosmos_store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cosmos DB writes the record (entries inside it) and the entry items separately."""
    reg = registry()
    step = Step(cosmos_store, RecordingTransport(), registry=reg)
    await step(add(1))
    create = type(cosmos_store)._create_entries

    async def dies(self, pk, entries):  # type: ignore[no-untyped-def]
        await create(self, pk, entries[:1])  # one entry item written, then the process dies
        raise Crash("between the entry items")

    monkeypatch.setattr(type(cosmos_store), "_create_entries", dies)
    with pytest.raises(Crash):
        await step(add(2))
    monkeypatch.setattr(type(cosmos_store), "_create_entries", create)
    assert await logged(cosmos_store) == expected(1, 2)[:3]  # the record has the rest
    record = await cosmos_store.load(CHRONICLE)  # any load writes what the record holds
    assert record.log == () and await logged(cosmos_store) == expected(1, 2)
    await step(add(2))  # the redelivery: a duplicate, which clears the record's entries
    await step(add(3))
    assert await logged(cosmos_store) == expected(1, 2, 3)


async def test_cosmos_refuses_a_record_over_its_item_size_naming_both(cosmos_store) -> None:
    from cadre.errors import RecordTooLarge
    from cadre.stores.base import AgentRecord, LogEntry

    big = LogEntry(str(CHRONICLE), 0, json.dumps("é" * 1_100_000, ensure_ascii=False))  # 2.2 MB
    with pytest.raises(RecordTooLarge, match=r"would be 2,2\d\d,\d\d\d bytes, over the 2,000,000"):
        await cosmos_store.save(AgentRecord(CHRONICLE, state="{}", log=(big,)), if_match=None)
    assert (await cosmos_store.load(CHRONICLE)).etag is None
    assert await cosmos_store.read_log(str(CHRONICLE), 0, 10) == []
