"""`cadre run` and `cadre resume`: a team task on the local runtime, printed as it happens.

The terminal is only a window on the store: the task runs as messages between agents in
the SQLite file, and this loop polls the root manager's state to print new messages, a
progress line while a participant works, and to ask the human when a user proxy waits.
Ctrl-C stops the runtime (steps under way finish); `cadre resume <task id>` continues.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TextIO

from ..errors import ConfigurationError, NotFound
from ..registry import Registry, default_registry
from ..teams.manager import FINISHED, MANAGER_TYPE, Team, TeamCatalog
from ..teams.messages import ChatMessage
from ..teams.tasks import Tasks

POLL_SECONDS = 0.05

InputFn = Callable[[str], str]


def find_team(name: str, registry: Registry = default_registry) -> Team:
    """The team registered as `name` by the app modules."""
    entry = registry.types.get(MANAGER_TYPE)
    if entry is None or not isinstance(entry.factory, TeamCatalog):
        raise ConfigurationError(
            "the app registers no team; define one (see agents/team.py) and call .register()"
        )
    return entry.factory.get(name)


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
            self.say(f"  {message.source} calls tools: {message.content}{cost}")
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
                text = await asyncio.to_thread(self.ask, f"\n{state.prompt or 'Your input:'} ")
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


async def run_task(
    runtime: object, team: Team, task: str, *, out: TextIO | None = None, ask: InputFn = input
) -> int:
    """Submit `task` to `team` on a started runtime and follow it to the end."""
    tasks = Tasks(runtime)  # type: ignore[arg-type]
    task_id = await tasks.submit(team, task)
    console = Console(tasks, out, ask)
    model = _model_label(team)
    console.say(f"task {task_id}  team {team.name}  model {model}")
    console.say(f"(Ctrl-C stops; `cadre resume {task_id}` continues)")
    return await console.follow(task_id)


async def resume_task(
    runtime: object, task_id: str, *, out: TextIO | None = None, ask: InputFn = input
) -> int:
    """Continue a task from the store (its pending messages reloaded) and follow it."""
    tasks = Tasks(runtime)  # type: ignore[arg-type]
    await _started(tasks, task_id)
    console = Console(tasks, out, ask)
    console.say(f"resuming task {task_id}")
    return await console.follow(task_id)


async def continue_task(
    runtime: object,
    task_id: str,
    text: str | None,
    *,
    out: TextIO | None = None,
    ask: InputFn = input,
) -> int:
    """Run a finished task again with `text` as the user's message, printing what follows."""
    tasks = Tasks(runtime)  # type: ignore[arg-type]
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


def _model_label(team: Team) -> str:
    for participant in team.participants.values():
        model = getattr(participant, "model", None)
        if model is not None:
            return str(model.model_name)
    return "none"
