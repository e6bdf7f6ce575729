"""A task written by the earlier layout (state version 1: the whole transcript inside the
manager's state) continues after the upgrade, on every store: its transcript moves to the
log at the manager's next step, and reads see it before and after."""

from __future__ import annotations

import json
from pathlib import Path

from cadre import AgentId, LocalRuntime, Registry
from cadre.models import ReplayClient
from cadre.stores.base import AgentRecord
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, Tasks, TextMention, UserProxy

V1 = json.loads((Path(__file__).parent / "data" / "team_state_v1.json").read_text())
"""Records written by the code before the transcript log (tests/teams/data, made by running
that code): a review task parked on the human's input after the writer's first draft."""


def review_team(registry: Registry) -> RoundRobinTeam:
    writer = Assistant("writer", model=ReplayClient(["the final draft"]))
    stop = TextMention(text="final", sources=["writer"]) | MaxMessages(max_messages=20)
    return RoundRobinTeam("review", [writer, UserProxy("human")], termination=stop).register(
        registry
    )


async def test_a_parked_task_of_the_earlier_layout_continues_after_the_upgrade(store) -> None:
    for agent_type, stored in (("cadre.team", V1["manager"]), ("writer", V1["writer"])):
        record = AgentRecord(
            AgentId(agent_type, "task-v1"),
            state=json.dumps(stored["state"]),
            state_version=stored["state_version"],
        )
        await store.save(record, if_match=None)
    registry = Registry()
    review_team(registry)
    async with LocalRuntime(store=store, registry=registry) as rt:
        tasks = Tasks(rt)
        info = await tasks.status("task-v1")
        assert (info.status, info.messages, info.speaker) == ("awaiting_input", 2, "human")
        before = [m.content for m in await tasks.messages("task-v1")]
        assert before == ["Write a memo", "a first draft"]

        await tasks.give_input("task-v1", "make it final")
        await rt.run_until_idle()
        info = await tasks.status("task-v1")
        assert info.status == "completed" and info.stop_reason == "writer mentioned 'final'"
        after = [m.content for m in await tasks.messages("task-v1")]
        assert after == ["Write a memo", "a first draft", "make it final", "the final draft"]
        assert [m.content for m in await tasks.messages("task-v1", after=1, limit=2)] == after[1:3]
        record = await rt.store.load(AgentId("cadre.team", "task-v1"))
        assert record.state_version == 2
        stored = json.loads(record.state or "{}")
        assert "transcript" not in stored and stored["carried"] == [] and stored["messages"] == 4
