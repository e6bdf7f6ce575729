"""Selector and swarm teams on the replay client (and the selector on the offline model)."""

from __future__ import annotations

import json

from cadre.models import ModelResult, OfflineClient, ReplayClient, ToolCall
from cadre.teams import (
    Assistant,
    Handoff,
    MaxMessages,
    SelectorTeam,
    SwarmTeam,
    TextMention,
    UserProxy,
)

from .conftest import Harness, speakers


def pick(name: str) -> str:
    return json.dumps({"speaker": name})


def agents(**scripts: list[str]) -> list[Assistant]:
    return [
        Assistant(name, model=ReplayClient(script), description=f"the {name}")
        for name, script in scripts.items()
    ]


async def test_the_model_picks_each_speaker(harness: Harness) -> None:
    selector = ReplayClient([pick("writer"), pick("critic"), pick("writer")])
    team = SelectorTeam(
        "sel",
        agents(planner=[], writer=["draft", "final DONE"], critic=["fix it"]),
        model=selector,
        termination=TextMention(text="DONE"),
    )
    info, messages = await harness.run(team, "Write")
    assert speakers(messages) == ["user", "writer", "critic", "writer"]
    assert info.status == "completed" and info.result == "final DONE"
    prompt = selector.calls[0][0].content
    assert "planner: the planner" in prompt and "user: Write" in prompt
    assert "selector" in prompt or "select the next role" in prompt
    assert info.usage_by_agent["sel.selector"].prompt_tokens > 0


async def test_nonsense_is_retried_three_times_then_falls_back_as_autogen_does(
    harness: Harness,
) -> None:
    selector = ReplayClient(["the best one", "banana", "cherry", "I pick b", "nope", "no", "x"])
    team = SelectorTeam(
        "sel-fallback",
        agents(a=["one", "three"], b=["two", "four"], c=[]),
        model=selector,
        termination=MaxMessages(max_messages=4),
        allow_repeated_speaker=True,
    )
    info, messages = await harness.run(team, "go")
    # first: three nonsense answers -> the first candidate ("a", no one spoke before);
    # then "I pick b" names exactly one candidate -> b; then nonsense -> b again (the
    # previous speaker: AutoGen's fallback).
    assert speakers(messages) == ["user", "a", "b", "b"]
    assert "not one of" in selector.calls[1][-1].content
    assert len(selector.calls) == 3 + 1 + 3
    assert info.status == "completed"


async def test_a_selector_func_picks_or_leaves_it_to_the_model(harness: Harness) -> None:
    selector = ReplayClient([pick("c")])
    team = SelectorTeam(
        "sel-func",
        agents(a=["from a"], b=["from b"], c=["from c"]),
        model_client=selector,  # AutoGen's name
        selector_func=lambda state: {1: "a", 2: "b"}.get(state.messages),
        termination_condition=MaxMessages(max_messages=4),  # AutoGen's name
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "a", "b", "c"]  # a, b by the function; c by the model
    assert len(selector.calls) == 1


async def test_the_candidate_filter_and_repeat_switch(harness: Harness) -> None:
    selector = ReplayClient([pick("b")])
    team = SelectorTeam(
        "sel-filter",
        agents(a=["never"], b=["one", "two"], c=[]),
        model=selector,
        candidates=lambda state: ["b", "c"] if state.messages < 2 else ["b"],
        allow_repeated_speaker=True,
        termination=MaxMessages(max_messages=3),
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "b", "b"]
    assert "'a'" not in selector.calls[0][0].content.split("select the next role from")[1]
    assert len(selector.calls) == 1  # the second turn had one candidate: no model call


async def test_without_repeats_the_last_speaker_is_not_a_candidate(harness: Harness) -> None:
    selector = ReplayClient([pick("a"), pick("a"), pick("a")])
    team = SelectorTeam(
        "sel-norepeat",
        agents(a=["one"], b=["two"]),
        model=selector,
        termination=MaxMessages(max_messages=3),
    )
    _, messages = await harness.run(team, "go")
    assert speakers(messages) == ["user", "a", "b"]


async def test_the_selector_runs_end_to_end_on_the_offline_model(harness: Harness) -> None:
    offline = OfflineClient()
    team = SelectorTeam(
        "sel-offline",
        [Assistant(n, model=offline) for n in ("planner", "writer", "critic")],
        model=offline,
        termination=MaxMessages(max_messages=5),
    )
    info, messages = await harness.run(team, "Plan a trip")
    assert info.status == "completed" and len(messages) == 5
    assert all(m.content.startswith("[offline]") for m in messages[1:])


def handoff(target: str) -> ModelResult:
    return ModelResult(
        tool_calls=(ToolCall(id=f"h-{target}", name=f"transfer_to_{target}"),),
        finish_reason="tool_calls",
    )


async def test_swarm_follows_hand_offs_and_returns_to_the_asker(harness: Harness) -> None:
    desk = Assistant(
        "desk",
        model=ReplayClient([handoff("flights"), "Booked. DONE"]),
        handoffs=["flights"],
    )
    flights = Assistant(
        "flights",
        model=ReplayClient(["Which date?", handoff("user"), handoff("desk")]),
        handoffs=["desk", "user"],
    )
    team = SwarmTeam(
        "swarm",
        [desk, flights, UserProxy("user")],
        termination=TextMention(text="DONE"),
    ).register(harness.registry)
    task_id = await harness.tasks.submit(team, "Book a flight")
    await harness.runtime.run_until_idle()
    info = await harness.tasks.status(task_id)
    assert (info.status, info.speaker) == ("awaiting_input", "user")
    await harness.tasks.give_input(task_id, "Friday")
    await harness.runtime.run_until_idle()
    messages = await harness.tasks.messages(task_id)
    assert [(m.source, m.kind, m.handoff) for m in messages if m.kind in ("handoff", "text")] == [
        ("user", "text", None),
        ("desk", "handoff", "flights"),
        ("flights", "text", None),
        ("flights", "handoff", "user"),
        ("user", "text", None),
        ("flights", "handoff", "desk"),
        ("desk", "text", None),
    ]
    info = await harness.tasks.status(task_id)
    assert info.status == "completed" and info.result == "Booked. DONE"


async def test_handoff_termination_stops_at_the_hand_off(harness: Harness) -> None:
    desk = Assistant("desk", model=ReplayClient(["hello", handoff("user")]), handoffs=["user"])
    team = SwarmTeam("swarm-stop", [desk], termination=Handoff(target="user"))
    info, messages = await harness.run(team, "Help")
    assert speakers(messages) == ["user", "desk"]
    assert info.status == "completed" and info.stop_reason == "desk handed off to user"


async def test_a_swarm_runs_end_to_end_on_the_offline_model(harness: Harness) -> None:
    offline = OfflineClient()
    team = SwarmTeam(
        "swarm-offline",
        [
            Assistant("desk", model=offline, handoffs=["flights"]),
            Assistant("flights", model=offline, handoffs=["desk"]),
        ],
        termination=MaxMessages(max_messages=6),
    )
    info, messages = await harness.run(team, "Book a flight")
    handoffs = [m.handoff for m in messages if m.kind == "handoff"]
    assert handoffs[:2] == ["flights", "desk"]
    assert info.status == "completed"
