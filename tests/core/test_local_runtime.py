"""The local runtime: per-agent order, concurrency across agents, timers, retries,
dead letters and redrive, and restarts on the same SQLite file with nothing lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cadre import AgentId, LocalRuntime, RetryPolicy
from cadre.errors import NotFound
from cadre.stores.sqlite import SQLiteStore
from tests.support import ordering
from tests.support.contracts import Add, Fail, Note, Remind, make_registry

COUNTER, RECORDER = AgentId("counter", "a"), AgentId("recorder", "a")
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def runtime_factory(store):  # type: ignore[no-untyped-def]
    def make(**kwargs):  # type: ignore[no-untyped-def]
        kwargs.setdefault("registry", make_registry())
        kwargs.setdefault("policy", FAST)
        return LocalRuntime(store=store, **kwargs)

    return make


async def test_replies_flow_and_state_persists(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory() as rt:
        for amount in (1, 2, 3):
            await rt.send(COUNTER, Add(amount=amount), reply_to=RECORDER)
        await rt.run_until_idle()
        assert (await rt.state(COUNTER)).total == 6  # type: ignore[attr-defined]
        assert (await rt.state(RECORDER)).totals == [1, 3, 6]  # type: ignore[attr-defined]


async def test_one_message_at_a_time_per_agent_in_order_and_agents_in_parallel(store) -> None:  # type: ignore[no-untyped-def]
    ordering.EVENTS.clear()
    async with LocalRuntime(store=store, registry=ordering.make_registry(), concurrency=8) as rt:
        for seq in range(10):
            for key in ("a", "b", "c", "d"):
                await rt.send(AgentId("tracker", key), ordering.Step(seq=seq, pause=0.01))
        await rt.run_until_idle()
        for key in ("a", "b", "c", "d"):
            mine = [(kind, seq) for k, kind, seq in ordering.EVENTS if k == key]
            # start/end strictly alternate: no two steps of one agent ever overlap
            assert mine == [(kind, seq) for seq in range(10) for kind in ("start", "end")]
            assert (await rt.state(AgentId("tracker", key))).seqs == list(range(10))  # type: ignore[attr-defined]
    # Different agents run in parallel: their steps overlap (measured from the event order,
    # not wall-clock time, so a slow network store cannot make this flaky).
    in_flight, most = set(), 0
    for key, kind, _seq in ordering.EVENTS:
        (in_flight.add if kind == "start" else in_flight.discard)(key)
        most = max(most, len(in_flight))
    assert most >= 3, f"at most {most} agent(s) ever ran at once"


async def test_timer_fires_at_its_time(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory() as rt:
        started = time.monotonic()
        await rt.send(COUNTER, Remind(text="tea", seconds=0.3))
        await rt.run_until_idle()
        assert rt.transport.timers() == 1
        assert (await rt.state(RECORDER)).notes == []  # type: ignore[attr-defined]
        await rt.run_until_idle(include_timers=True)
        assert time.monotonic() - started >= 0.3
        assert (await rt.state(RECORDER)).notes == ["tea"]  # type: ignore[attr-defined]


async def test_failing_handler_is_retried_and_blocks_later_messages_for_that_agent(
    runtime_factory,
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory() as rt:
        await rt.send(COUNTER, Fail(times=2), reply_to=RECORDER)
        await rt.send(COUNTER, Add(amount=1), reply_to=RECORDER)
        await rt.run_until_idle()
        # The Fail step succeeded on attempt 3 (+1000), before Add ran (so Add saw 1001).
        assert (await rt.state(RECORDER)).totals == [1001]  # type: ignore[attr-defined]
        assert await rt.store.list_dead_letters() == []


async def test_exhausted_retries_dead_letter_then_redrive(runtime_factory) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory() as rt:
        envelope = await rt.send(COUNTER, Fail(times=3))
        await rt.send(COUNTER, Add(amount=1), reply_to=RECORDER)  # not blocked by the poison
        await rt.run_until_idle()
        [letter] = await rt.store.list_dead_letters()
        assert (letter.id, letter.reason, letter.attempts) == (envelope.id, "handler_failed", 3)
        assert (await rt.state(COUNTER)).total == 1  # type: ignore[attr-defined]
        # The redriven envelope starts again at attempt 1, which still fails 3 times...
        await rt.redrive(letter.id)
        await rt.run_until_idle()
        assert [d.id for d in await rt.store.list_dead_letters()] == [envelope.id]
        with pytest.raises(NotFound):
            await rt.redrive("no-such-letter")


async def test_restart_on_the_same_sqlite_file_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cadre.db"
    registry = make_registry()
    rt = LocalRuntime(store=SQLiteStore(path), registry=registry, policy=FAST)
    # Queue work and a timer without ever starting a consumer, then "stop".
    await rt.transport.start()
    for amount in (1, 2, 3):
        await rt.send(COUNTER, Add(amount=amount), reply_to=RECORDER)
    await rt.send(COUNTER, Remind(text="later", seconds=0.2))
    await rt.close()

    async with LocalRuntime(store=SQLiteStore(path), registry=registry, policy=FAST) as again:
        await again.run_until_idle(include_timers=True)
        assert (await again.state(COUNTER)).total == 6  # type: ignore[attr-defined]
        assert (await again.state(RECORDER)).totals == [1, 3, 6]  # type: ignore[attr-defined]
        assert (await again.state(RECORDER)).notes == ["later"]  # type: ignore[attr-defined]
        assert again.transport.pending() == 0


async def test_stop_mid_run_and_restart_completes_the_same_work(tmp_path: Path) -> None:
    path = tmp_path / "cadre.db"
    registry = make_registry()
    rt = LocalRuntime(store=SQLiteStore(path), registry=registry, policy=FAST)
    await rt.start()
    for amount in range(1, 201):
        await rt.send(COUNTER, Add(amount=amount), reply_to=RECORDER)
    await asyncio.sleep(0.005)  # let some, not all, of the work run
    await rt.close()

    async with LocalRuntime(store=SQLiteStore(path), registry=registry, policy=FAST) as again:
        await again.run_until_idle()
        totals = (await again.state(RECORDER)).totals  # type: ignore[attr-defined]
    expected = [n * (n + 1) // 2 for n in range(1, 201)]
    assert totals == expected


async def test_note_to_unregistered_recipient_is_dead_lettered_not_crashing(
    runtime_factory,
) -> None:  # type: ignore[no-untyped-def]
    async with runtime_factory() as rt:
        await rt.send(AgentId("ghost", "a"), Note(text="boo"))
        await rt.send(COUNTER, Add(amount=1), reply_to=RECORDER)
        await rt.run_until_idle()
        [letter] = await rt.store.list_dead_letters()
        assert letter.reason == "unknown_agent_type"
        assert (await rt.state(COUNTER)).total == 1  # type: ignore[attr-defined]
