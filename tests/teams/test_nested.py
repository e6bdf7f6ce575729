"""A team as a participant of another team: its run is one turn of the outer team, and its
members' messages join the outer transcript under their own names, as AutoGen relays them."""

from __future__ import annotations

from cadre.models import ReplayClient
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, TextMention, UserProxy

from .conftest import Harness, speakers


async def test_an_inner_team_relays_its_members_messages_in_one_turn(harness: Harness) -> None:
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
    assert speakers(messages) == ["user", "boss", "drafter", "editor", "drafter", "editor", "boss"]
    assert [m.content for m in messages[2:6]] == ["draft 1", "edit 1", "draft 2", "edit 2 OK"]
    assert {m.via for m in messages[2:6]} == {"drafting"} and messages[6].via is None
    assert info.status == "completed" and info.result == "approved DONE"
    # the inner run's tokens count once, under the members' names
    assert info.usage_by_agent["drafter"].completion_tokens == 2 + 2
    assert info.usage_by_agent["editor"].completion_tokens == 2 + 3
    # the boss's second turn is told what the team said; the team is not told it back
    assert [m.content for m in boss.model.calls[1][-4:]] == [  # type: ignore[attr-defined]
        "draft 1",
        "edit 1",
        "draft 2",
        "edit 2 OK",
    ]
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
