"""`cadre run` and `cadre resume`: the default team end to end, human input, failures."""

from __future__ import annotations

import asyncio
import io
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cadre import LocalRuntime
from cadre.cli import main
from cadre.hosts.console import find_team, run_task
from cadre.models import ReplayClient
from cadre.teams import Assistant, RoundRobinTeam, Tasks, TextMention, UserProxy
from tests.support.fresh_app import run_cadre_in_fresh_folder

from .conftest import Harness


def test_cadre_run_works_with_no_configuration_in_a_fresh_folder(tmp_path: Path) -> None:
    done = run_cadre_in_fresh_folder(tmp_path, "run", "Plan a three-day trip to Lisbon")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "team default  model offline" in out
    assert out.index("[planner]") < out.index("[writer]") < out.index("[critic]")
    assert "tool result (budget): total:" in out
    assert "completed: critic mentioned 'APPROVE'" in out
    assert "Result:\n[offline]" in out
    assert (tmp_path / ".cadre" / "cadre.db").exists()


def test_resume_continues_an_interrupted_task_from_the_store(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "state.db"
    team = find_team("default")  # agents/ is imported by the CLI tests' app loading
    task_id = asyncio.run(start_and_interrupt(path, team))
    code = main(["resume", task_id, "--state", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"resuming task {task_id}" in out
    assert out.count("\n[user]\n") == 1  # the transcript, printed once
    assert "completed: critic mentioned 'APPROVE'" in out


async def start_and_interrupt(path: Path, team: RoundRobinTeam) -> str:
    async with LocalRuntime.sqlite(path) as runtime:
        tasks = Tasks(runtime)
        task_id = await tasks.submit(team, "Plan a three-day trip to Lisbon")
        await runtime.stop()  # like Ctrl-C before the first step
    return task_id


def test_run_continue_runs_a_finished_task_again_printing_only_what_is_new(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "state.db"
    assert main(["run", "Plan a three-day trip to Lisbon", "--state", str(path)]) == 0
    first = capsys.readouterr().out
    task_id = first.split()[1]
    code = main(["run", "--continue", task_id, "Make it four days", "--state", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert f"continuing task {task_id} (11 messages so far)" in out
    assert "[user]\nPlan a three-day trip" not in out  # the history is not printed again
    assert out.index("[user]\nMake it four days") < out.index("[planner]")  # round-robin again
    assert "completed: critic mentioned 'APPROVE'" in out
    assert main(["run", "--continue", "nope", "x", "--state", str(path)]) == 2
    assert "no task 'nope'" in capsys.readouterr().err


def test_resume_of_an_unknown_task_fails_clearly(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["resume", "nope", "--state", str(tmp_path / "s.db")])
    assert code == 2
    assert "no task 'nope'" in capsys.readouterr().err


async def test_a_user_proxy_asks_on_the_terminal(harness: Harness) -> None:
    writer = Assistant("writer", model=ReplayClient(["Which city?", "Lisbon. DONE"]))
    team = RoundRobinTeam(
        "ask-tty",
        [writer, UserProxy("human", prompt="City?")],
        termination=TextMention(text="DONE"),
    ).register(harness.registry)
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return "Lisbon"

    out = io.StringIO()
    code = await run_task(harness.runtime, team, "Plan a trip", out=out, ask=ask)
    assert code == 0 and prompts == ["\nCity? "]
    assert "[human]\nLisbon" in out.getvalue()
    assert "Result:\nLisbon. DONE" in out.getvalue()


async def test_a_failed_task_exits_non_zero_with_the_reason(harness: Harness, capsys) -> None:  # type: ignore[no-untyped-def]
    team = RoundRobinTeam("broken-tty", [Assistant("writer", model=ReplayClient([]))])
    team.register(harness.registry)
    code = await run_task(harness.runtime, team, "Write", out=io.StringIO())
    assert code == 1
    assert "failed: writer: model call failed" in capsys.readouterr().err


def test_an_unknown_team_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(["run", "x", "--team", "nope", "--state", str(tmp_path / "s.db")])
    assert code == 2
    assert "team 'nope' is not registered" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _app_loaded() -> None:
    from cadre.apps import load_app

    load_app(["agents"])


TEAM_RUNS = {
    # team: (answers typed at the prompts, what the run must show, why it stopped)
    "default": ([], ["[planner]", "[writer]", "[critic]", "planner calls budget("], "critic"),
    "selector": ([], ["[planner]", "[local_guide]", "[writer]"], "writer mentioned 'TERMINATE'"),
    "swarm": (
        ["LX4T2Q"],
        [
            "travel_desk calls transfer_to_refunds()",
            "refunds calls transfer_to_customer()",
            "Your booking reference (e.g. LX4T2Q):",
            "refunds calls refund_flight(booking_reference=",
            "tool result (refund_flight): refund of booking",
        ],
        "refunds mentioned 'TERMINATE'",
    ),
    "magentic": ([], ["Task ledger", "[researcher]", "[analyst]"], "judged the request done"),
    "nested": ([], ["[drafter]", "[reviewer]", "[editor]"], "maximum of 2 turns reached"),
    "review": (
        ["Make it shorter", "APPROVE"],
        ["[reviewer]\nMake it shorter", "[reviewer]\nAPPROVE"],
        "reviewer mentioned 'APPROVE'",
    ),
}


@pytest.mark.parametrize("name", sorted(TEAM_RUNS))
def test_every_team_of_the_app_runs_offline_and_behaves_as_its_pattern(  # type: ignore[no-untyped-def]
    name: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers, shown, reason = TEAM_RUNS[name]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{a}\n" for a in answers)))
    code = main(["run", "--team", name, "Plan a weekend in Porto", "--state", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert code == 0, out
    for text in shown:
        assert text in out, (text, out)
    assert f"team {name}  model offline" in out
    assert "For a real one set CADRE_MODEL" in out  # how to get a real model, once
    assert out.count("For a real one set CADRE_MODEL") == 1
    assert reason in out.split("--- task", 1)[1]


def test_the_review_team_asks_twice_unless_approved_at_once(  # type: ignore[no-untyped-def]
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = "Reply APPROVE to accept the draft, or say what to change:"
    monkeypatch.setattr("sys.stdin", io.StringIO("Shorter\nWarmer\n"))
    assert main(["run", "--team", "review", "Welcome", "--state", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert out.count(prompt) == 2 and "maximum of 5 messages reached" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("APPROVE\n"))
    assert main(["run", "--team", "review", "Welcome", "--state", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.count(prompt) == 1


def test_an_empty_task_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "s.db"
    assert main(["run", "", "--state", str(state)]) == 2
    assert "the task is empty" in capsys.readouterr().err
    assert main(["run", "   ", "--state", str(state)]) == 2
    assert not state.exists()


def test_ctrl_c_at_a_prompt_stops_at_once_and_names_the_task_to_resume(tmp_path: Path) -> None:
    """In a real terminal (a pseudo-terminal whose Ctrl-C sends SIGINT): one Ctrl-C at the
    user proxy's prompt ends `cadre run` at once, printing the real `cadre resume` line;
    that line continues the task, which asks again."""
    state = str(tmp_path / "s.db")
    run = in_terminal(["run", "--team", "review", "Write a haiku", "--state", state])
    try:
        run.expect("or say what to change:")
        started = time.monotonic()
        run.sendintr()  # Ctrl-C
        run.expect(pexpect_eof())
        run.close()
        assert time.monotonic() - started < 5
    finally:
        run.terminate(force=True)
    assert run.exitstatus == 130
    resume = re.search(r"`cadre resume ([0-9a-f]{32}) --state (\S+)` continues it", run.before)
    assert resume is not None, run.before
    again = in_terminal(["resume", resume.group(1), "--state", resume.group(2)])
    try:
        again.expect("or say what to change:")
        again.sendline("APPROVE")
        again.expect("completed: reviewer mentioned 'APPROVE'")
        again.expect(pexpect_eof())
    finally:
        again.close(force=True)
    assert again.exitstatus == 0


def in_terminal(argv: list[str]) -> Any:
    """`cadre ARGV` on a pseudo-terminal (pexpect), as a user at a terminal runs it."""
    pexpect = pytest.importorskip("pexpect")
    root = Path(__file__).resolve().parents[2]
    return pexpect.spawn(
        sys.executable, ["-m", "cadre.cli", *argv], cwd=str(root), encoding="utf-8", timeout=20
    )


def pexpect_eof() -> Any:
    import pexpect

    return pexpect.EOF
