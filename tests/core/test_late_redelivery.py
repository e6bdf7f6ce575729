"""Exactly once through the local runtime however late a redelivery comes: the same
envelope queued again after 10,000 newer messages to the same agent, on SQLite, and again
after a restart on the same file."""

from __future__ import annotations

from pathlib import Path

from cadre import AgentId, LocalRuntime
from cadre.envelope import Envelope, new_id, utcnow
from cadre.stores.sqlite import SQLiteStore
from tests.support.contracts import make_registry

COUNTER = AgentId("counter", "late")
NEWER = 10_000


def add(amount: int) -> Envelope:
    return Envelope(
        id=new_id(),
        message="test.Add",
        version=1,
        payload={"amount": amount},
        task_id="t",
        recipient=str(COUNTER),
        reply_to="recorder/late",
        created_at=utcnow(),
    )


async def queue(rt: LocalRuntime, envelopes: list[Envelope]) -> None:
    """Queue envelopes as a transport redelivery would (`send` makes new ones)."""
    await rt.transport.send(envelopes)
    rt.transport.flush()
    await rt.run_until_idle()


async def test_a_redelivery_after_ten_thousand_newer_messages_has_no_effect(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    first = add(1_000_000)
    async with LocalRuntime(store=SQLiteStore(path), registry=make_registry()) as rt:
        await queue(rt, [first, *(add(1) for _ in range(NEWER))])
        await queue(rt, [first])  # the same id and bytes, 10,000 messages later
        assert (await rt.state(COUNTER)).total == 1_000_000 + NEWER  # type: ignore[attr-defined]
    async with LocalRuntime(store=SQLiteStore(path), registry=make_registry()) as rt:
        await queue(rt, [first])  # and after a restart: the ids are in the file
        assert (await rt.state(COUNTER)).total == 1_000_000 + NEWER  # type: ignore[attr-defined]
