"""A team as a participant of another team: its result is one turn of the outer team."""

from __future__ import annotations

from cadre.models import ReplayClient
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention, UserProxy

from .conftest import Harness, speakers


async def test_an_inner_team_answers_one_turn_with_its_result(harness: Harness) -> None:
    inner = RoundRobinTeam(
        "drafting",
        [
            Assistant("drafter", model=ReplayClient(["draft 1", "draft 2"])),
            Assistant("editor", model=ReplayClient(["edit 1", "edit 2 OK"])),
        ],
        termination=TextMention(text="OK") | MaxMessages(max_messages=10),
    )
    boss = Assistant("boss", model=ReplayClient(["please draft", "approved DONE"]))
    outer = RoundRobinTeam("outer", [boss, inner], termination=TextMention(text="DONE"))
    outer.register(harness.registry)
    task_id = await harness.tasks.submit(outer, "Write a memo")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    messages = await harness.tasks.messages(task_id)
    assert speakers(messages) == ["user", "boss", "drafting", "boss"]
    assert messages[2].content == "edit 2 OK"
    assert info.status == "completed" and info.result == "approved DONE"
    # the inner run's tokens count once, under the inner team's name
    assert info.usage_by_agent["drafting"].completion_tokens == 2 + 2 + 2 + 3
    inner_state = await harness.tasks.state(f"{task_id}/drafting")
    assert speakers(await harness.tasks.messages(f"{task_id}/drafting")) == [
        "user",
        "boss",
        "drafter",
        "editor",
        "drafter",
        "editor",
    ]
    assert inner_state.status == "completed"


async def test_input_and_cancel_reach_the_inner_team(harness: Harness) -> None:
    inner = RoundRobinTeam(
        "asking",
        [
            Assistant("asker", model=ReplayClient(["which city?", "Lisbon noted OK"])),
            UserProxy("human"),
        ],
        termination=TextMention(text="OK"),
    )
    lead = Assistant("lead", model=ReplayClient(["ask them", "thanks DONE"]))
    outer = RoundRobinTeam("outer2", [lead, inner], termination=TextMention(text="DONE"))
    outer.register(harness.registry)
    task_id = await harness.tasks.submit(outer, "Trip")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert (info.status, info.speaker) == ("awaiting_input", "asking")
    await harness.tasks.give_input(task_id, "Lisbon")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.result == "thanks DONE"
    said = await harness.tasks.messages(f"{task_id}/asking")
    assert [m.content for m in said][-2:] == ["Lisbon", "Lisbon noted OK"]

    lead.model.responses.append("ask again")  # type: ignore[attr-defined]
    inner.participants["asker"].model.responses.append("which date?")  # type: ignore[attr-defined]
    second = await harness.tasks.submit(outer, "Another trip")
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(second)).status == "awaiting_input"
    await harness.tasks.cancel(second)
    await harness.runtime.run_until_idle()
    assert (await harness.tasks.status(second)).status == "cancelled"
    assert (await harness.tasks.state(f"{second}/asking")).status == "cancelled"
