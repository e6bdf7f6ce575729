"""The task lifecycle: human input, cancel, and restarts of the runtime mid-task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cadre import LocalRuntime, Registry
from cadre.errors import ConfigurationError, NotFound, TaskStateError
from cadre.models import ModelResult, ReplayClient, ToolCall
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, Tasks, TextMention, UserProxy

from .conftest import Harness, speakers


async def slow_lookup(topic: str) -> str:
    """A slow tool (a stand-in for a web search)."""
    await asyncio.sleep(0.05)
    return f"facts about {topic}"


def lookup_call(n: int) -> ModelResult:
    return ModelResult(
        tool_calls=(ToolCall(id=f"c{n}", name="slow_lookup", arguments=f'{{"topic": "t{n}"}}'),)
    )


def research_team(name: str, rounds: int = 4) -> RoundRobinTeam:
    researcher = Assistant(
        "researcher",
        model=ReplayClient([lookup_call(n) for n in range(rounds)]),
        tools=[slow_lookup],
    )
    writer = Assistant("writer", model=ReplayClient([f"draft {n}" for n in range(rounds)]))
    return RoundRobinTeam(
        name,
        [researcher, writer],
        termination=MaxMessages(max_messages=1 + 4 * rounds, include_agent_event=True),
    )


async def wait_for(predicate) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate` (the store, as another process would) for up to five seconds."""
    async with asyncio.timeout(5.0):
        while not await predicate():  # noqa: ASYNC110 - polling the store is the point
            await asyncio.sleep(0.01)


async def test_a_user_proxy_parks_the_team_until_input_arrives(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient(["Which city?", "Lisbon it is. DONE"]))
    team = RoundRobinTeam(
        "ask", [writer, UserProxy("human", prompt="City?")], termination=TextMention(text="DONE")
    )
    team.register(harness.registry)
    task_id = await harness.tasks.submit(team, "Plan a trip")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert (info.status, info.speaker, info.prompt) == ("awaiting_input", "human", "City?")
    await harness.tasks.give_input(task_id, "Lisbon")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert info.status == "completed"
    messages = await harness.tasks.messages(task_id)
    assert [(m.source, m.content) for m in messages] == [
        ("user", "Plan a trip"),
        ("writer", "Which city?"),
        ("human", "Lisbon"),
        ("writer", "Lisbon it is. DONE"),
    ]
    assert [m.content for m in await harness.tasks.messages(task_id, after=2)] == [
        "Lisbon",
        "Lisbon it is. DONE",
    ]
    with pytest.raises(TaskStateError, match="completed, not awaiting_input"):
        await harness.tasks.give_input(task_id, "again")
    with pytest.raises(TaskStateError, match="already completed"):
        await harness.tasks.cancel(task_id)


async def test_status_of_an_unknown_task_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.tasks.status("nope")


async def test_cancel_stops_a_running_task_within_one_step(harness: Harness) -> None:
    team = research_team("cancel").register(harness.registry)
    researcher = team.participants["researcher"]
    task_id = await harness.tasks.submit(team, "Research")

    async def researching() -> bool:
        info = await harness.tasks.status(task_id)
        return info.status == "running" and info.speaker == "researcher" and info.messages >= 3

    await wait_for(researching)
    await harness.tasks.cancel(task_id, "user changed their mind")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert info.status == "cancelled" and info.stop_reason == "user changed their mind"
    # The turn under way when the cancel came is dropped; nobody is asked again.
    messages = await harness.tasks.messages(task_id)
    assert speakers(messages) == ["user", "researcher", "writer"]
    assert len(researcher.model.calls) == 2  # type: ignore[attr-defined]


async def test_a_restarted_runtime_completes_the_task_with_the_same_transcript(
    tmp_path: Path,
) -> None:
    reference_registry = Registry()
    async with LocalRuntime(registry=reference_registry) as rt:
        tasks = Tasks(rt)
        reference = research_team("restart").register(reference_registry)
        ref_id = await tasks.submit(reference, "Research")
        await rt.run_until_idle()
        expected = [(m.source, m.kind, m.content) for m in await tasks.messages(ref_id)]

    registry = Registry()
    team = research_team("restart").register(registry)
    path = tmp_path / "cadre.db"
    first = LocalRuntime.sqlite(path, registry=registry)
    await first.start()
    first_tasks = Tasks(first)
    task_id = await first_tasks.submit(team, "Research")

    async def halfway() -> bool:
        return (await first_tasks.status(task_id)).messages >= 6

    await wait_for(halfway)
    await first.close()  # steps under way finish; queued envelopes stay in the file
    assert (await status_from_file(path, registry, task_id)) == "running"

    async with LocalRuntime.sqlite(path, registry=registry) as second:
        await second.run_until_idle()
        tasks = Tasks(second)
        info = await tasks.status(task_id)
        messages = await tasks.messages(task_id)
    assert info.status == "completed"
    assert [(m.source, m.kind, m.content) for m in messages] == expected


async def status_from_file(path: Path, registry: Registry, task_id: str) -> str:
    async with LocalRuntime.sqlite(path, registry=registry) as reader:
        await reader.stop()
        return (await Tasks(reader).status(task_id)).status


async def test_a_task_parked_at_a_user_proxy_survives_a_restart(tmp_path: Path) -> None:
    registry = Registry()
    writer = Assistant("writer", model=ReplayClient(["Which city?", "Lisbon. DONE"]))
    team = RoundRobinTeam(
        "park", [writer, UserProxy("human")], termination=TextMention(text="DONE")
    )
    team.register(registry)
    path = tmp_path / "cadre.db"
    async with LocalRuntime.sqlite(path, registry=registry) as rt:
        task_id = await Tasks(rt).submit(team, "Trip")
        await rt.run_until_idle()
        assert (await Tasks(rt).status(task_id)).status == "awaiting_input"
    async with LocalRuntime.sqlite(path, registry=registry) as rt:
        tasks = Tasks(rt)  # a new process: nothing in memory about the task
        await tasks.give_input(task_id, "Lisbon")
        await rt.run_until_idle()
        info = await tasks.status(task_id)
        assert info.status == "completed" and info.result == "Lisbon. DONE"
        assert speakers(await tasks.messages(task_id)) == ["user", "writer", "human", "writer"]


async def test_submit_registers_a_team_object_and_rejects_unknown_names(harness: Harness) -> None:
    team = RoundRobinTeam(
        "unregistered",
        [Assistant("w", model=ReplayClient(["hi"]))],
        termination=MaxMessages(max_messages=2),
    )
    task_id = await harness.tasks.submit(team, "go")  # registered on the way
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(task_id)).status == "completed"
    with pytest.raises(ConfigurationError, match="team 'nope' is not registered"):
        await harness.tasks.submit("nope", "go")
    queued = Tasks(harness.runtime)
    await harness.runtime.stop()
    waiting = await queued.submit("unregistered", "later")
    assert (await queued.status(waiting)).status == "queued"
    with pytest.raises(NotFound):
        await Tasks(harness.runtime).status(waiting)
