"""`cadre run` and `cadre resume`: a team task on the local runtime, printed as it happens.

The terminal is only a window on the store: the task runs as messages between agents in
the SQLite file, and this loop polls the root manager's state to print new messages, a
progress line while a participant works, and to ask the human when a user proxy waits.
Ctrl-C stops the runtime at once, even at a prompt (steps under way finish); `cadre resume
<task id>` continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from ..errors import ConfigurationError, NotFound
from ..registry import Registry, default_registry
from ..runtime import Sender
from ..teams.manager import FINISHED, MANAGER_TYPE, Team, TeamCatalog
from ..teams.messages import ChatMessage
from ..teams.participants import Assistant, UserProxy
from ..teams.tasks import Tasks

POLL_SECONDS = 0.05

InputFn = Callable[[str], str]

REAL_MODEL_HINT = (
    "(offline model: placeholder text. For a real one set CADRE_MODEL, e.g. "
    "CADRE_MODEL=openai:gpt-4o-mini with OPENAI_API_KEY; README, Model configuration)"
)


def teams(registry: Registry = default_registry) -> list[Team]:
    """The teams the app modules registered, by name."""
    entry = registry.types.get(MANAGER_TYPE)
    if entry is None or not isinstance(entry.factory, TeamCatalog):
        return []
    return [entry.factory.teams[name] for name in sorted(entry.factory.teams)]


def find_team(name: str, registry: Registry = default_registry) -> Team:
    """The team registered as `name` by the app modules."""
    entry = registry.types.get(MANAGER_TYPE)
    if entry is None or not isinstance(entry.factory, TeamCatalog):
        raise ConfigurationError(
            "the app registers no team; define one (see agents/team.py) and call .register()"
        )
    return entry.factory.get(name)


def describe_condition(condition: Any) -> str | None:
    """A termination condition as one line (``TextMention(text='APPROVE') |
    MaxMessages(max_messages=16)``); None for none."""
    if condition is None:
        return None
    kind = getattr(condition, "kind", "")
    if kind in ("any_of", "all_of"):
        joiner = " | " if kind == "any_of" else " & "
        parts = [describe_condition(c) or "" for c in condition.conditions]
        return joiner.join(f"({p})" if (" | " in p or " & " in p) else p for p in parts)
    fields = condition.model_dump(exclude={"kind"}, exclude_defaults=True)
    args = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return f"{type(condition).__name__}({args})"


def participant_kind(participant: object) -> str:
    """``assistant``, ``user_proxy``, ``team`` or ``agent`` (a custom participant)."""
    if isinstance(participant, Team):
        return "team"
    if isinstance(participant, UserProxy):
        return "user_proxy"
    if isinstance(participant, Assistant):
        return "assistant"
    return "agent"


def team_summary(team: Team) -> dict[str, Any]:
    """What `cadre teams --json` prints for one team."""
    return {
        "name": team.name,
        "pattern": team.pattern_name,
        "description": team.description,
        "participants": [
            {"name": p.name, "kind": participant_kind(p), "description": p.description}
            for p in team.participants.values()
        ],
        "termination": describe_condition(team.termination),
        "max_turns": team.max_turns,
    }


def format_tool_calls(content: str) -> str:
    """A tool-call message's JSON as ``name(arg=value, ...)`` lines (raw text otherwise)."""
    try:
        calls = json.loads(content)
        lines = []
        for call in calls:
            arguments = json.loads(call.get("arguments") or "{}")
            args = ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())
            lines.append(f"{call['name']}({args})")
        return "; ".join(lines)
    except (ValueError, TypeError, KeyError, AttributeError):
        return content


class Console:
    """Prints a task's transcript from the store and relays human input."""

    def __init__(self, tasks: Tasks, out: TextIO | None = None, ask: InputFn = input) -> None:
        self.tasks = tasks
        self.out = out or sys.stdout
        self.ask = ask

    def say(self, text: str) -> None:
        """Print one line and flush (the conversation is live)."""
        print(text, file=self.out, flush=True)

    def show(self, message: ChatMessage) -> None:
        """Print one transcript entry: speaker, text and its tokens."""
        tokens = message.usage.total_tokens
        cost = f"  ({tokens} tokens)" if tokens else ""
        if message.kind == "text":
            self.say(f"\n[{message.source}]{cost}\n{message.content}")
        elif message.kind == "tool_call":
            self.say(f"  {message.source} calls {format_tool_calls(message.content)}{cost}")
        elif message.kind == "tool_result":
            label = "tool error" if message.is_error else "tool result"
            self.say(f"  {label} ({message.tool_name}): {message.content}")
        else:
            self.say(f"  {message.source}: {message.content}")

    async def follow(self, task_id: str, *, seen: int = 0, after_run: int = 0) -> int:
        """Print the task from message `seen` until it finishes (a run after `after_run`);
        0 if it completed, 1 otherwise."""
        waiting_for = None
        while True:
            try:
                state = await self.tasks.state(task_id)
            except NotFound:
                await asyncio.sleep(POLL_SECONDS)
                continue
            if state.run <= after_run:  # the continued run has not started yet
                await asyncio.sleep(POLL_SECONDS)
                continue
            while seen < state.messages:  # the state first: the log holds at least this
                page = await self.tasks.messages(task_id, after=seen, limit=state.messages - seen)
                if not page:
                    break
                for message in page:
                    self.show(message)
                seen += len(page)
            if state.status in FINISHED:
                return self._summary(
                    task_id, state.status, state.result, state.stop_reason, state.usage.total_tokens
                )
            if state.status == "awaiting_input":
                text = await _ask_in_background(self.ask, f"\n{state.prompt or 'Your input:'} ")
                await self.tasks.give_input(task_id, text)
                waiting_for = None
                await asyncio.sleep(POLL_SECONDS)
                continue
            if state.speaker and state.speaker != waiting_for:
                waiting_for = state.speaker
                self.say(f"... {state.speaker} is working")
            await asyncio.sleep(POLL_SECONDS)

    def _summary(
        self, task_id: str, status: str, result: str | None, reason: str | None, tokens: int
    ) -> int:
        self.say(f"\n--- task {task_id} {status}: {reason} ({tokens} tokens in all)")
        if status == "completed":
            self.say(f"\nResult:\n{result}")
            return 0
        print(f"cadre: task {task_id} {status}: {reason}", file=sys.stderr)
        return 1


async def _ask_in_background(ask: InputFn, prompt: str) -> str:
    """`ask(prompt)` on a daemon thread: a Ctrl-C cancels the wait at once, and the process
    can exit without the answer (a worker thread of `asyncio.to_thread` would hold it until
    Enter)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: BaseException | None) -> None:
        if answer.done():
            return
        if error is not None:
            answer.set_exception(error)
        else:
            answer.set_result(value or "")

    def read() -> None:
        try:
            value, error = ask(prompt), None
        except BaseException as exc:  # EOFError at the end of piped input, ...
            value, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it
            loop.call_soon_threadsafe(settle, value, error)

    threading.Thread(target=read, name="cadre-input", daemon=True).start()
    return await answer


async def run_task(
    runtime: Sender,
    team: Team,
    task: str,
    *,
    out: TextIO | None = None,
    ask: InputFn = input,
    started: Callable[[str], None] | None = None,
) -> int:
    """Submit `task` to `team` on a started runtime and follow it to the end; `started`
    hears the task id as soon as there is one."""
    if not task.strip():
        raise ConfigurationError("the task is empty: say what the team should do")
    tasks = Tasks(runtime)
    task_id = await tasks.submit(team, task)
    if started is not None:
        started(task_id)
    console = Console(tasks, out, ask)
    model = model_label(team)
    console.say(f"task {task_id}  team {team.name}  model {model}")
    if model.startswith("offline"):
        console.say(REAL_MODEL_HINT)
    console.say(f"(Ctrl-C stops; `cadre resume {task_id}` continues)")
    return await console.follow(task_id)


async def resume_task(
    runtime: Sender, task_id: str, *, out: TextIO | None = None, ask: InputFn = input
) -> int:
    """Continue a task from the store (its pending messages reloaded) and follow it."""
    tasks = Tasks(runtime)
    await _started(tasks, task_id)
    console = Console(tasks, out, ask)
    console.say(f"resuming task {task_id}")
    return await console.follow(task_id)


async def continue_task(
    runtime: Sender,
    task_id: str,
    text: str | None,
    *,
    out: TextIO | None = None,
    ask: InputFn = input,
) -> int:
    """Run a finished task again with `text` as the user's message, printing what follows."""
    tasks = Tasks(runtime)
    await _started(tasks, task_id)
    state = await tasks.state(task_id)
    await tasks.continue_task(task_id, text)
    console = Console(tasks, out, ask)
    console.say(f"continuing task {task_id} ({state.messages} messages so far)")
    return await console.follow(task_id, seen=state.messages, after_run=state.run)


async def _started(tasks: Tasks, task_id: str, grace: float = 1.0) -> None:
    """Wait for the task's first step (it may have been stopped while still queued)."""
    for _ in range(int(grace / POLL_SECONDS)):
        try:
            await tasks.state(task_id)
            return
        except NotFound:
            await asyncio.sleep(POLL_SECONDS)
    await tasks.state(task_id)  # NotFound for a task this store never saw


def model_label(team: Team) -> str:
    """The model a team's assistants (or its selector, its orchestrator) use: ``offline``,
    ``offline (1.5 s a reply)``, ``gpt-4o``, ...; ``none`` for a team of humans."""
    for participant in [team, *team.participants.values()]:
        model = getattr(participant, "model", None)
        if model is not None:
            delay = getattr(model, "delay", 0)
            return f"{model.model_name}" + (f" ({delay:g} s a reply)" if delay else "")
        if isinstance(participant, Team) and participant is not team:
            label = model_label(participant)
            if label != "none":
                return label
    return "none"
