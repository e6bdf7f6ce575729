"""`cadre run --trace PATH`: the task's spans as JSON lines, and their tree printed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.fresh_app import run_cadre_in_fresh_folder


def test_cadre_run_trace_writes_one_trace_and_prints_its_tree(tmp_path: Path) -> None:
    done = run_cadre_in_fresh_folder(
        tmp_path, "run", "--trace", "trace.jsonl", "Plan a day in Porto"
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert len({r["trace_id"] for r in records}) == 1
    for record in records:
        assert {"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes"} <= set(
            record
        )
    ids = {r["span_id"] for r in records}
    [root] = [r for r in records if r["parent_span_id"] is None]
    assert root["name"] == "send cadre.team.StartTask"
    assert all(r["parent_span_id"] in ids for r in records if r is not root)
    names = {r["name"] for r in records}
    assert {"process cadre.team.RequestTurn", "chat offline", "execute_tool budget"} <= names
    tree = done.stdout.split("trace written to trace.jsonl:\n", 1)[1]
    lines = tree.splitlines()
    assert lines[0].startswith("send cadre.team.StartTask (producer)")
    assert lines[1].startswith("  process cadre.team.StartTask (consumer) @ cadre.team/")
    assert "· speaker_selected planner (round robin)" in tree
    assert "· terminated completed: critic mentioned 'APPROVE'" in tree
    assert len(lines) == len(records) + sum(len(r["events"]) for r in records)
