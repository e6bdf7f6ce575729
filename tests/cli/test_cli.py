"""The `cadre` command, run in-process through `cadre.cli.main` and once as a console script."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadre.cli import main

FAILING_APP = textwrap.dedent(
    """
    from cadre import Agent, Context, Message, handler

    class Explode(Message, name="clitest.Explode"):
        why: str

    class Bomb(Agent, type="clitest-bomb"):
        @handler
        async def explode(self, msg: Explode, ctx: Context) -> None:
            raise RuntimeError(msg.why)
    """
)


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "cadre.db")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_agents_lists_types_and_the_messages_they_handle(capsys, state) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "--state", state, "agents")
    assert code == 0
    assert "notebook  (agents.notebook.Notebook)" in out
    assert "handles: app.AddNote v1, app.Remind v1" in out


def test_send_runs_the_step_and_prints_state_and_reply(capsys, state) -> None:  # type: ignore[no-untyped-def]
    add = ["--state", state, "send", "notebook/a", "app.AddNote"]
    code, out, _ = run(capsys, *add, '{"text":"x"}')
    assert code == 0
    assert 'state of notebook/a: {"notes":["x"],"reminders":[]}' in out
    assert 'reply from notebook/a: app.NoteAdded {"count":1}' in out
    # The state is in the file: a second command sees the first note.
    code, out, _ = run(capsys, *add, '{"text":"y"}')
    assert '"notes":["x","y"]' in out and '{"count":2}' in out


def test_send_reports_a_pending_timer(capsys, state) -> None:  # type: ignore[no-untyped-def]
    payload = '{"text":"later","remind_in_seconds":3600}'
    code, out, _ = run(capsys, "--state", state, "send", "notebook/a", "app.AddNote", payload)
    assert code == 0
    assert "1 timer(s) pending" in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["send", "notebook/a", "app.AddNote", '{"txt":"x"}'], "text"),
        (["send", "notebook/a", "app.AddNote", "not json"], "Invalid JSON"),
        (["send", "notebook/a", "app.Nope", "{}"], "no message contract is registered"),
        (["send", "notebook", "app.AddNote", '{"text":"x"}'], "expected 'type/key'"),
        (["--app", "no_such_app_module", "agents"], "cannot import the app module"),
        (["dlq", "show", "missing-id"], "no dead letter"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(capsys, state, argv, expected) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "--state", state, *argv)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err + out


def test_dead_letters_can_be_listed_shown_and_redriven(  # type: ignore[no-untyped-def]
    capsys, state, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "clitest_app.py").write_text(FAILING_APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADRE_MAX_ATTEMPTS", "1")
    base = ["--state", state, "--app", "clitest_app"]

    code, _, err = run(capsys, *base, "send", "clitest-bomb/1", "clitest.Explode", '{"why":"boom"}')
    assert code == 1
    assert "1 new dead letter(s)" in err

    code, out, _ = run(capsys, *base, "dlq", "list", "--json")
    [letter] = json.loads(out)
    assert letter["reason"] == "handler_failed"
    assert "RuntimeError: boom" in letter["detail"]
    assert letter["agent"] == "clitest-bomb/1"
    assert letter["body"]["payload"] == {"why": "boom"}

    code, out, _ = run(capsys, *base, "dlq", "show", letter["id"])
    assert code == 0
    shown = json.loads(out)
    assert shown["id"] == letter["id"] and "RuntimeError: boom" in shown["traceback"]

    # Redriving a letter whose handler still fails dead-letters it again, and says so.
    code, out, _ = run(capsys, *base, "dlq", "redrive", letter["id"])
    assert code == 1
    assert f"redriven {letter['id']}" in out
    assert "handled 0, dead-lettered again 1" in out


def test_redrive_after_a_fix_handles_the_letter(capsys, state, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "clitest_app2.py").write_text(
        FAILING_APP.replace("clitest.Explode", "clitest2.Explode").replace(
            "clitest-bomb", "clitest2-bomb"
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADRE_MAX_ATTEMPTS", "1")
    base = ["--state", state, "--app", "clitest_app2"]
    run(capsys, *base, "send", "clitest2-bomb/1", "clitest2.Explode", '{"why":"boom"}')
    # "Deploy the fix": the agent type now handles the message.
    import clitest_app2  # type: ignore[import-not-found]

    async def fixed(self, msg, ctx) -> None:  # type: ignore[no-untyped-def]
        return None

    monkeypatch.setattr(clitest_app2.Bomb, "_routes", {})
    monkeypatch.setitem(clitest_app2.Bomb._handlers, clitest_app2.Explode, fixed)
    code, out, _ = run(capsys, *base, "dlq", "redrive", "--all")
    assert code == 0
    assert "handled 1, dead-lettered again 0" in out
    code, out, _ = run(capsys, *base, "dlq", "list")
    assert "no dead letters" in out


def test_console_script_help_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cadre.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("agents", "send", "dlq"):
        assert command in done.stdout


def test_teams_lists_every_team_with_pattern_participants_and_termination(capsys, state) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(capsys, "--state", state, "teams")
    assert code == 0
    for name, pattern in [
        ("default", "round_robin"),
        ("selector", "selector"),
        ("swarm", "swarm"),
        ("magentic", "magentic_one"),
        ("nested", "round_robin"),
        ("review", "round_robin"),
    ]:
        assert f"\n{name}  ({pattern})" in f"\n{out}"
    assert "participants: travel_desk, refunds, customer (user proxy)" in out
    assert "participants: drafts (team), editor" in out
    assert "stops on: TextMention(text='APPROVE', sources=['critic']) | MaxMessages(" in out
    assert "stops on: the orchestrator judging the request done or 12 turns" in out

    code, out, _ = run(capsys, "--state", state, "teams", "--json")
    teams = {t["name"]: t for t in json.loads(out)}
    assert teams["review"]["pattern"] == "round_robin"
    assert [(p["name"], p["kind"]) for p in teams["review"]["participants"]] == [
        ("writer", "assistant"),
        ("reviewer", "user_proxy"),
    ]
    assert teams["swarm"]["termination"].startswith("TextMention(text='TERMINATE'")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["nope/a", "app.AddNote", '{"text":"x"}'], "no agent type 'nope' is registered"),
        (["notebook/a", "app.NoteAdded", '{"count":1}'], "has no handler for app.NoteAdded"),
    ],
)
def test_send_refuses_before_sending_what_would_be_dead_lettered(  # type: ignore[no-untyped-def]
    capsys, state, argv, expected
) -> None:
    code, out, err = run(capsys, "--state", state, "send", *argv)
    assert code == 2
    assert err.count(expected) == 1 and "nothing was sent" in err
    assert "sent " not in out
    code, out, _ = run(capsys, "--state", state, "dlq", "list")
    assert "no dead letters" in out


def test_the_help_examples_run(capsys, state) -> None:  # type: ignore[no-untyped-def]
    import shlex

    from cadre.cli import EXAMPLES, build_parser

    send_help = build_parser()._subparsers._group_actions[0].choices["send"].format_help()  # type: ignore[union-attr]
    lines = [line.strip().split("  ")[0] for line in EXAMPLES.splitlines()[1:] if line.strip()]
    lines.append(send_help.split("example: ", 1)[1].splitlines()[0])
    ran = 0
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "cadre", line
        if argv[1] == "serve":  # runs until stopped: tests/e2e start it
            continue
        code, _, err = run(capsys, "--state", state, *argv[1:])
        assert code == 0, (line, err)
        ran += 1
    assert ran >= 4


def test_dlq_lists_and_shows_any_stored_bytes(capsys, state) -> None:  # type: ignore[no-untyped-def]
    """A body nested deeper than the parser goes, or not JSON, is printed as text (a long
    one shortened, said so): one such letter never breaks the dead-letter tools."""
    import asyncio
    from datetime import UTC, datetime

    from cadre.stores.base import DeadLetter
    from cadre.stores.sqlite import SQLiteStore

    async def add() -> None:
        store = SQLiteStore(state)
        for letter_id, body in (("deep", b"[" * 90_000 + b"]" * 90_000), ("odd", b"\xff x")):
            await store.add_dead_letter(
                DeadLetter(letter_id, body, "envelope_invalid", "bad", datetime.now(UTC))
            )
        await store.close()

    asyncio.run(add())
    code, out, _ = run(capsys, "--state", state, "dlq", "list", "--json")
    assert code == 0
    bodies = {d["id"]: d["body"] for d in json.loads(out)}
    assert bodies["deep"].endswith("... [114,464 more characters]") and bodies["odd"] == "\ufffd x"
    code, out, _ = run(capsys, "--state", state, "dlq", "show", "deep")
    assert code == 0 and json.loads(out)["body"].startswith("[[[")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_serve_refuses_a_network_address_without_a_key(capsys, state, monkeypatch, host) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CADRE_API_KEY", raising=False)
    code, _, err = run(capsys, "--state", state, "serve", "--host", host, "--port", "1")
    assert code == 2
    assert "CADRE_API_KEY" in err and "--insecure-no-key" in err


def test_loopback_needs_no_key_and_the_flag_allows_the_network() -> None:
    from cadre.hosts.serve import check_exposure
    from cadre.settings import ApiSettings, Settings

    for host in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"):
        check_exposure(Settings(), host, insecure_no_key=False)
    check_exposure(Settings(), "0.0.0.0", insecure_no_key=True)
    check_exposure(Settings(api=ApiSettings(key="k")), "0.0.0.0", insecure_no_key=False)


def test_serve_refuses_a_key_no_client_can_send(capsys, state, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CADRE_API_KEY", "clé")
    code, _, err = run(capsys, "--state", state, "serve", "--port", "1")
    assert code == 2 and "printable ASCII" in err


cli_text = st.text(
    st.sampled_from(["\x00", "\ud800", "/", "{", "}", '"', ":", "-", " ", "é", "\U0001d11e"])
    | st.characters(codec=None, exclude_categories=()),
    max_size=24,
)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    agent=st.sampled_from(["notebook/a"]) | cli_text,
    message=st.sampled_from(["app.AddNote"]) | cli_text,
    payload=st.sampled_from(['{"text":"x"}', '{"text":"a\\u0000b"}', "{}", "[]"]) | cli_text,
)
def test_no_send_argument_makes_a_traceback(capsys, state, agent, message, payload) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run(capsys, "--state", state, "send", agent, message, payload)
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in out + err
