"""Ctrl-C during `cadre run`, then `cadre resume`: the same task finishes from the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SLOW_APP = '''
import time
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam


def survey(topic: str) -> str:
    """A slow survey."""
    time.sleep(0.4)
    return "surveyed"


RoundRobinTeam(
    "slow",
    [Assistant("surveyor", tools=[survey]), Assistant("writer")],
    termination=MaxMessages(max_messages=9),
).register()
'''


def cadre(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADRE_")}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{REPO}"
    return subprocess.Popen(
        [sys.executable, "-m", "cadre.cli", "--app", "slowapp", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_then_resume_finishes_the_same_task(tmp_path: Path) -> None:
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    run = cadre(tmp_path, "run", "Survey Lisbon trams", "--team", "slow")
    assert run.stdout is not None
    first = run.stdout.readline()
    task_id = first.split()[1]
    deadline = time.monotonic() + 20
    seen = ""
    while "surveyor is working" not in seen and time.monotonic() < deadline:
        seen += run.stdout.readline()
    time.sleep(0.5)  # the first tool call is under way
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=20)
    assert run.returncode == 130, err
    assert "cadre resume" in err
    assert "completed" not in seen + out

    resume = cadre(tmp_path, "resume", task_id)
    out, err = resume.communicate(timeout=30)
    assert resume.returncode == 0, err
    assert f"resuming task {task_id}" in out
    assert "completed: maximum of 9 messages reached" in out
    assert out.count("\n[user]\n") == 1
