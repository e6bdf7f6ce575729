"""`cadre run` and `cadre resume`: the default team end to end, human input, failures."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

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
    from cadre.cli import load_app

    load_app(["agents"])
