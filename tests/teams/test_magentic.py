"""The Magentic-One style orchestrator on the replay client (and offline)."""

from __future__ import annotations

import json

from cadre.models import OfflineClient, ReplayClient
from cadre.teams import Assistant, MagenticOneTeam

from .conftest import Harness, speakers


def progress(
    speaker: str, *, done: bool = False, progress: bool = True, loop: bool = False, say: str = "go"
) -> str:
    return json.dumps(
        {
            "is_request_satisfied": done,
            "is_in_loop": loop,
            "is_progress_being_made": progress,
            "next_speaker": speaker,
            "instruction_or_question": say,
        }
    )


def team_of(name: str, orchestrator: ReplayClient, **kwargs: object) -> MagenticOneTeam:
    researcher = Assistant("researcher", model=ReplayClient(["found A", "found B", "found C"]))
    writer = Assistant("writer", model=ReplayClient(["draft", "draft 2"]))
    return MagenticOneTeam(name, [researcher, writer], model=orchestrator, **kwargs)  # type: ignore[arg-type]


async def test_plans_directs_and_answers(harness: Harness) -> None:
    orchestrator = ReplayClient(
        [
            "we know nothing",
            "1. research 2. write",
            progress("researcher", say="find facts"),
            progress("writer", say="write it up"),
            progress("writer", done=True),
            "The final answer.",
        ]
    )
    info, messages = await harness.run(team_of("m1", orchestrator), "Explain trams")
    assert speakers(messages) == [
        "user",
        "orchestrator",
        "orchestrator",
        "researcher",
        "orchestrator",
        "writer",
        "orchestrator",
    ]
    assert messages[1].content.startswith("Task ledger") and "1. research" in messages[1].content
    assert messages[2].content == "researcher: find facts"
    assert info.status == "completed" and info.result == "The final answer."
    assert info.stop_reason == "the orchestrator judged the request done"
    assert "orchestrator" in info.usage_by_agent
    assert "Explain trams" in orchestrator.calls[0][0].content


async def test_stalls_trigger_a_new_plan(harness: Harness) -> None:
    orchestrator = ReplayClient(
        [
            "facts",
            "plan",
            progress("researcher", progress=False),
            progress("researcher", loop=True),
            "a better plan",
            progress("writer", done=True),
            "Answer.",
        ]
    )
    info, messages = await harness.run(team_of("m2", orchestrator, max_stalls=2), "Task")
    ledgers = [m.content for m in messages if m.content.startswith("Task ledger")]
    assert len(ledgers) == 2 and "a better plan" in ledgers[1]
    assert speakers(messages).count("researcher") == 2
    assert info.result == "Answer."


async def test_gives_up_after_too_many_replans_and_survives_nonsense(harness: Harness) -> None:
    orchestrator = ReplayClient(["facts", "plan", "not json", "new plan", "still not json"])
    info, messages = await harness.run(
        team_of("m3", orchestrator, max_stalls=1, max_replans=1), "Task"
    )
    # nonsense -> stall -> replan, list-order fallback (researcher); nonsense again -> give up
    assert speakers(messages) == [
        "user",
        "orchestrator",
        "orchestrator",
        "orchestrator",
        "researcher",
    ]
    assert info.status == "completed" and info.stop_reason == "stalled after 1 re-plans"


async def test_the_orchestrator_runs_end_to_end_on_the_offline_model(harness: Harness) -> None:
    offline = OfflineClient()
    team = MagenticOneTeam(
        "m-offline", [Assistant(n, model=offline) for n in ("researcher", "writer")], model=offline
    )
    info, messages = await harness.run(team, "Plan a trip to Lisbon")
    assert info.status == "completed", info.stop_reason
    assert info.stop_reason == "the orchestrator judged the request done"
    assert {"researcher", "writer"} & set(speakers(messages))
    assert info.result is not None and info.result.startswith("[offline]")
