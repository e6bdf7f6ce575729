"""SQLite specifics: group commit survives kill -9 at random points, and a queue row that
no longer parses is dead-lettered at start, not dropped and not fatal."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cadre import AgentId, LocalRuntime
from cadre.stores.sqlite import SQLiteStore
from tests.support.contracts import make_registry

ROOT = Path(__file__).resolve().parents[2]
COUNT = 1500


def kill_child(args: list[str], ready: str, seconds: float) -> None:
    """Start the child module, wait for its `ready` line, then kill -9 it `seconds` later."""
    child = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == ready
        time.sleep(seconds)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdout.close()  # type: ignore[union-attr]


def kill_mid_run(path: Path, seed: int) -> None:
    """Start the child, let it queue everything, then kill -9 it a few ms into the run."""
    seconds = random.Random(seed).uniform(0.01, 0.06)  # somewhere mid-run
    kill_child(["tests.support.crash_child", str(path), str(COUNT)], "sent", seconds)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_mid_run_then_restart_gives_the_exact_result(
    tmp_path: Path, seed: int
) -> None:
    path = tmp_path / "cadre.db"
    kill_mid_run(path, seed)
    with closing(sqlite3.connect(path)) as db:  # the kill did interrupt the work
        assert db.execute("SELECT count(*) FROM queue").fetchone()[0] > 0
    async with LocalRuntime(store=SQLiteStore(path), registry=make_registry()) as rt:
        await rt.run_until_idle()
        counter = await rt.state(AgentId("counter", "a"))
        recorder = await rt.state(AgentId("recorder", "a"))
    assert counter.total == COUNT * (COUNT + 1) // 2  # type: ignore[attr-defined]
    # Every reply once, in order: no message lost, no effect doubled.
    assert recorder.totals == [n * (n + 1) // 2 for n in range(1, COUNT + 1)]  # type: ignore[attr-defined]


async def test_unparseable_queue_row_is_dead_lettered_at_start(tmp_path: Path) -> None:
    path = tmp_path / "cadre.db"
    store = SQLiteStore(path, commit_interval=0)
    store._db.execute("INSERT INTO queue (id, body) VALUES ('bad', '{\"garbage\": true}')")
    await store.close()
    async with LocalRuntime(store=SQLiteStore(path), registry=make_registry()) as rt:
        await rt.run_until_idle()
        [letter] = await rt.store.list_dead_letters()
        assert (letter.id, letter.reason, letter.body) == (
            "bad",
            "envelope_invalid",
            b'{"garbage": true}',
        )
        assert rt.transport.pending() == 0


async def test_commit_interval_zero_commits_every_write(tmp_path: Path) -> None:
    from cadre.stores.base import AgentRecord

    store = SQLiteStore(tmp_path / "c.db", commit_interval=0)
    await store.save(AgentRecord(AgentId("counter", "a"), state="{}"), if_match=None)
    other = sqlite3.connect(tmp_path / "c.db")  # another connection sees it at once
    assert other.execute("SELECT count(*) FROM agents").fetchone() == (1,)
    other.close()
    await store.close()


async def test_one_runtime_owns_a_file_and_readers_may_look(tmp_path: Path) -> None:
    from cadre.errors import StoreError
    from cadre.stores.base import AgentRecord, DeadLetter

    path = tmp_path / "owned.db"
    owner = SQLiteStore(path)
    with pytest.raises(
        StoreError, match=f"in use by another Cadre runtime \\(pid {os.getpid()}\\)"
    ):
        SQLiteStore(path)
    letter = DeadLetter("d1", b"{}", "no_handler", "detail", datetime.now(UTC))
    await owner.add_dead_letter(letter)
    await owner.save(AgentRecord(AgentId("counter", "a"), state="{}"), if_match=None)
    owner.flush()

    reader = SQLiteStore(path, readonly=True)
    assert [d.id for d in await reader.list_dead_letters()] == ["d1"]
    assert (await reader.load(AgentId("counter", "a"))).etag == "1"
    with pytest.raises(StoreError, match="read-only"):
        await reader.delete_dead_letter("d1")
    with pytest.raises(StoreError, match="read-only"):
        reader.journal()
    await reader.close()

    await owner.close()
    again = SQLiteStore(path)  # closing gave the file up
    assert (await again.load(AgentId("counter", "a"))).state == "{}"
    await again.close()


async def test_readonly_store_on_a_fresh_file_sees_nothing(tmp_path: Path) -> None:
    reader = SQLiteStore(tmp_path / "new.db", readonly=True)
    assert await reader.list_dead_letters() == []
    await reader.close()


async def test_records_reach_the_file_only_at_commit_and_all_together(tmp_path: Path) -> None:
    from cadre.stores.base import AgentRecord

    path = tmp_path / "batched.db"
    store = SQLiteStore(path, commit_interval=3600)
    etag = await store.save(AgentRecord(AgentId("counter", "a"), state='{"n":1}'), if_match=None)
    await store.save(AgentRecord(AgentId("counter", "a"), state='{"n":2}'), if_match=etag)
    journal = store.journal()
    journal.add([_note("e1"), _note("e2")])
    journal.remove("e1")  # handled before the commit: never written
    with closing(sqlite3.connect(path)) as other:
        assert other.execute("SELECT count(*) FROM agents").fetchone() == (0,)
        store.flush()
        assert other.execute("SELECT state, version FROM agents").fetchall() == [('{"n":2}', 2)]
        assert other.execute("SELECT id FROM queue").fetchall() == [("e2",)]
    await store.close()


def _note(envelope_id: str):  # type: ignore[no-untyped-def]
    from cadre.envelope import Envelope

    return Envelope(
        id=envelope_id,
        message="test.Note",
        version=1,
        payload={"text": envelope_id},
        task_id="t",
        recipient="recorder/a",
        created_at=datetime.now(UTC),
    )


def kill_team_mid_run(path: Path, seed: int) -> None:
    """Start the long team task in a child, then kill -9 it a few hundred messages in."""
    seconds = random.Random(seed).uniform(0.2, 0.5)
    kill_child(["tests.support.crash_team_child", str(path)], "submitted", seconds)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_during_a_long_team_task_then_resume_gives_the_undisturbed_transcript(
    tmp_path: Path, seed: int
) -> None:
    from cadre import Registry
    from cadre.teams import Tasks
    from tests.support.crash_team_child import LENGTH, long_team

    registry = Registry()
    long_team(registry)
    async with LocalRuntime(registry=registry) as reference:  # undisturbed, in memory
        tasks = Tasks(reference)
        await tasks.submit("long", "Talk for a long time", task_id="long-task")
        await reference.run_until_idle()
        expected = [(m.source, m.content) for m in await tasks.messages("long-task")]
    assert len(expected) == LENGTH

    path = tmp_path / "cadre.db"
    kill_team_mid_run(path, seed)
    with closing(sqlite3.connect(path)) as db:  # the kill did interrupt the task
        logged = db.execute("SELECT count(*) FROM log").fetchone()[0]
    assert 0 < logged < LENGTH

    async with LocalRuntime(store=SQLiteStore(path), registry=registry) as rt:  # cadre resume
        await rt.run_until_idle()
        tasks = Tasks(rt)
        info = await tasks.status("long-task")
        got = [(m.source, m.content) for m in await tasks.messages("long-task")]
    assert info.status == "completed" and info.messages == LENGTH
    assert got == expected  # nothing lost, nothing doubled, in order
