"""A team that cannot go on fails its task with the reason instead of hanging: a message
that cannot be delivered (the dead letter notifies the manager), or one message larger than
the store can keep in an item; a transcript itself has no limit but storage."""

from __future__ import annotations

from cadre import Agent, AgentId, Context, LocalRuntime, Registry, handler
from cadre.models import ReplayClient
from cadre.processing import RetryPolicy
from cadre.stores.memory import MemoryStore
from cadre.teams import Assistant, MaxMessages, Participant, RoundRobinTeam, Tasks
from cadre.teams.messages import RequestTurn
from tests.support.contracts import Add

FAST = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.001)


class Broken(Agent):
    """A custom participant whose handler always raises."""

    @handler
    async def turn(self, msg: RequestTurn, ctx: Context) -> None:
        raise RuntimeError("the participant's database is down")


async def test_a_participant_type_that_is_not_registered_fails_the_task() -> None:
    registry = Registry()
    team = RoundRobinTeam(
        "ghosted",
        [Assistant("writer", model=ReplayClient(["draft"])), Participant("ghost", "test.ghost")],
        termination=MaxMessages(max_messages=5),
    ).register(registry)
    async with LocalRuntime(registry=registry, policy=FAST) as rt:
        tasks = Tasks(rt)
        task_id = await tasks.submit(team, "write something")
        await rt.run_until_idle()
        info = await tasks.status(task_id)
        assert info.status == "failed"
        assert info.stop_reason is not None
        assert "cadre.team.RequestTurn to test.ghost/" in info.stop_reason
        assert "unknown_agent_type" in info.stop_reason or "not registered" in info.stop_reason
        # The writer's turn happened; the dead letter is kept for a redrive after a fix.
        assert [m.source for m in await tasks.messages(task_id) if m.kind == "text"][-1] == "writer"
        [letter] = await rt.store.list_dead_letters()
        assert letter.task_id == task_id and letter.message == "cadre.team.RequestTurn"


async def test_a_participant_out_of_attempts_fails_the_task_once() -> None:
    registry = Registry()
    registry.register(Broken, type="test.broken_participant")
    team = RoundRobinTeam(
        "brittle",
        [Participant("broken", "test.broken_participant")],
        termination=MaxMessages(max_messages=5),
    ).register(registry)
    async with LocalRuntime(registry=registry, policy=FAST) as rt:
        tasks = Tasks(rt)
        task_id = await tasks.submit(team, "do it")
        await rt.run_until_idle(include_timers=True)
        info = await tasks.status(task_id)
        assert info.status == "failed"
        assert "handler_failed" in (info.stop_reason or "")
        assert "the participant's database is down" in (info.stop_reason or "")
        # Redriving the dead letter re-sends the notice with the same id: no second effect.
        [letter] = await rt.store.list_dead_letters()
        finished_at = info.finished_at
        await rt.redrive(letter.id)
        await rt.run_until_idle(include_timers=True)
        assert (await tasks.status(task_id)).finished_at == finished_at


async def test_a_message_from_outside_any_agent_is_dead_lettered_without_a_notice() -> None:
    async with LocalRuntime(registry=Registry(), policy=FAST) as rt:
        await rt.send(AgentId("test.nobody", "x"), Add(amount=1))
        await rt.run_until_idle()
        assert [d.reason for d in await rt.store.list_dead_letters()] == ["unknown_agent_type"]


class SmallItemStore(MemoryStore):
    """A store whose items hold at most 8,000 bytes (Cosmos DB's limit, scaled down)."""

    max_item_bytes = 8_000


async def writer_task(answers: list[str], max_messages: int) -> tuple[Tasks, str, SmallItemStore]:
    """A one-writer team that says `answers`, run to the end on a `SmallItemStore`."""
    registry, store = Registry(), SmallItemStore()
    team = RoundRobinTeam(
        "sized",
        [Assistant("writer", model=ReplayClient(answers))],
        termination=MaxMessages(max_messages=max_messages),
    ).register(registry)
    async with LocalRuntime(store=store, registry=registry, policy=FAST) as rt:
        tasks = Tasks(rt)
        task_id = await tasks.submit(team, "write a lot")
        await rt.run_until_idle()
    return tasks, task_id, store


async def test_a_message_over_the_stores_entry_size_fails_the_task_naming_size_and_limit() -> None:
    # 'é' is two bytes in UTF-8: 1,100 of them are 2,200 bytes, over a quarter of 8,000
    tasks, task_id, store = await writer_task(["x" * 300, "é" * 1_100, "z" * 300], 10)
    info = await tasks.status(task_id)
    assert info.status == "failed"
    assert "a message from writer is 2,3" in (info.stop_reason or "")
    assert "over the 2,000 bytes a transcript entry may have" in (info.stop_reason or "")
    assert [m.content for m in await tasks.messages(task_id)] == ["write a lot", "x" * 300]
    assert await store.list_dead_letters() == []  # the task failed; nothing is stuck


async def test_a_long_transcript_has_no_size_limit_but_storage() -> None:
    tasks, task_id, _ = await writer_task(["é" * 800] * 40, 41)
    info = await tasks.status(task_id)
    assert info.status == "completed" and info.messages == 41  # 64 kB of transcript: 8 items
    assert len(await tasks.messages(task_id)) == 41
