"""What the routes do, over a runtime and its store: submit (idempotently), read a task,
answer it, cancel it, list teams, check health.

A submitted task gets a small *submission record* in the state store (agent type
``cadre.api.submission``, keyed by the task id) before its `StartTask` is sent. It makes a
task readable (``queued``) before its manager's first step, from any process, and it is the
idempotency lock: with an ``Idempotency-Key`` the task id is derived from the key, and the
record is created with a create-only write, so a retried submit finds it, whatever process
or restart it lands on.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from ..envelope import new_id, utcnow
from ..errors import ConcurrencyConflict, ConfigurationError
from ..ids import AgentId
from ..messages import Message
from ..migrations import load_state
from ..registry import Registry
from ..runtime import Runtime
from ..stores.base import AgentRecord
from ..teams.manager import FINISHED, MANAGER_TYPE, Team, TeamCatalog, TeamState
from ..teams.messages import CancelTask, ChatMessage, ContinueTask, HumanInput
from ..teams.tasks import Tasks, transcript
from ._models import Check, Participant, TeamView
from ._problems import ProblemError

SUBMISSION_TYPE = "cadre.api.submission"
"""The agent type of submission records (never delivered to: only the API reads them)."""

HEALTH_TIMEOUT_SECONDS = 5.0
_KEY_NAMESPACE = uuid.UUID("6f0b7a52-3c1e-4d0a-9a43-6c2f4b1d8e10")


class Submission(BaseModel):
    """The submission record's state."""

    team: str
    task: str
    submitted_at: datetime
    idempotency_key: bool = False


def task_id_for_key(key: str) -> str:
    """The task id an ``Idempotency-Key`` stands for (32 hex digits, like every task id)."""
    return uuid.uuid5(_KEY_NAMESPACE, key).hex


def not_found(task_id: str) -> ProblemError:
    """The 404 of an unknown task."""
    return ProblemError(404, "task-not-found", "Task not found", f"no task {task_id!r}")


class Service:
    """The API's operations; routes translate HTTP to these calls and back."""

    def __init__(self, runtime: Runtime, registry: Registry) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.registry = registry
        self.tasks = Tasks(runtime)

    # teams -----------------------------------------------------------------------------

    def catalog(self) -> dict[str, Team]:
        """The teams registered in this process, by name."""
        entry = self.registry.types.get(MANAGER_TYPE)
        if entry is None or not isinstance(entry.factory, TeamCatalog):
            return {}
        return dict(entry.factory.teams)

    def team(self, name: str) -> Team:
        """The team `name`, or a 404 naming the known ones."""
        teams = self.catalog()
        if name not in teams:
            known = ", ".join(sorted(teams)) or "none"
            raise ProblemError(
                404, "team-not-found", "Team not found", f"no team {name!r} (known: {known})"
            )
        return teams[name]

    def teams(self) -> list[TeamView]:
        """Every team with its participants."""
        return [_team_view(team) for _, team in sorted(self.catalog().items())]

    # tasks -----------------------------------------------------------------------------

    async def submit(self, team: str, task: str, idempotency_key: str | None) -> tuple[str, bool]:
        """Start `team` on `task`; returns (task id, whether an earlier submit was replayed)."""
        self.team(team)
        task_id = task_id_for_key(idempotency_key) if idempotency_key else new_id()
        record = Submission(
            team=team, task=task, submitted_at=utcnow(), idempotency_key=bool(idempotency_key)
        )
        try:
            await self.store.save(
                AgentRecord(AgentId(SUBMISSION_TYPE, task_id), state=record.model_dump_json()),
                if_match=None,
            )
        except ConcurrencyConflict:
            earlier = await self.submission(task_id)
            if earlier is None or (earlier.team, earlier.task) != (team, task):
                raise ProblemError(
                    409,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                    "this Idempotency-Key was used for a different request (team or task "
                    "differ); use a new key for a new task",
                ) from None
            if (await self.store.load(AgentId(MANAGER_TYPE, task_id))).etag is None:
                # The earlier submit may have stopped before sending; a second StartTask is
                # a no-op for a manager that has started, so sending again is safe.
                await self._start(team, task, task_id)
            return task_id, True
        await self._start(team, task, task_id)
        return task_id, False

    async def _start(self, team: str, task: str, task_id: str) -> None:
        try:
            await self.tasks.submit(team, task, task_id=task_id)
        except ConfigurationError as exc:  # the team vanished from the registry
            raise ProblemError(404, "team-not-found", "Team not found", str(exc)) from None

    async def submission(self, task_id: str) -> Submission | None:
        """The task's submission record, if it was submitted through the API."""
        record = await self.store.load(AgentId(SUBMISSION_TYPE, task_id))
        return Submission.model_validate_json(record.state) if record.state else None

    async def state(self, task_id: str) -> TeamState:
        """The task's manager state; a task submitted but not started yet reads `queued`."""
        record = await self.store.load(AgentId(MANAGER_TYPE, task_id))
        if record.state:
            state = load_state(MANAGER_TYPE, TeamState, record)
            assert isinstance(state, TeamState)
            return state
        submitted = await self.submission(task_id)
        if submitted is None:
            raise not_found(task_id)
        return TeamState(team=submitted.team, task=submitted.task)

    async def messages(self, task_id: str, after: int, limit: int) -> list[ChatMessage]:
        """A page of the task's transcript (its manager's log)."""
        return await transcript(self.store, task_id, after=after, limit=limit)

    async def give_input(self, task_id: str, text: str) -> None:
        """Answer the user proxy; 409 unless the task is awaiting input."""
        st = await self.state(task_id)
        if st.status != "awaiting_input":
            raise _wrong_state(task_id, st.status, "awaiting_input")
        await self._send(task_id, HumanInput(text=text))

    async def continue_task(self, task_id: str, text: str | None) -> None:
        """Run a finished task again with the user's message; 409 while it is not finished."""
        st = await self.state(task_id)
        if st.status not in FINISHED:
            raise _wrong_state(task_id, st.status, "completed, failed or cancelled")
        await self._send(task_id, ContinueTask(text=text))

    async def cancel(self, task_id: str, reason: str) -> None:
        """Cancel the task at its manager's next step; 409 when it has finished."""
        st = await self.state(task_id)
        if st.status in FINISHED:
            raise _wrong_state(task_id, st.status, "queued, running or awaiting_input")
        await self._send(task_id, CancelTask(reason=reason))

    async def _send(self, task_id: str, message: Message) -> None:
        await self.runtime.send(AgentId(MANAGER_TYPE, task_id), message, task_id=task_id)

    # health ----------------------------------------------------------------------------

    async def health(self) -> dict[str, Check]:
        """The runtime's own checks (`Runtime.health`), within `HEALTH_TIMEOUT_SECONDS`."""
        try:
            found = await asyncio.wait_for(self.runtime.health(), HEALTH_TIMEOUT_SECONDS)
        except Exception as exc:  # a health check reports failures, it does not raise them
            return {"runtime": Check(ok=False, detail=f"{type(exc).__name__}: {exc}"[:300])}
        return {name: _check(value) for name, value in dict(found).items()}


def _wrong_state(task_id: str, status: str, needed: str) -> ProblemError:
    return ProblemError(
        409,
        "task-state-conflict",
        "Task is in the wrong state",
        f"task {task_id} is {status}; this needs it to be {needed}",
    )


def _check(value: Any) -> Check:
    """One entry of `runtime.health()`: a bool, or a mapping with `ok` and `detail`."""
    if isinstance(value, Check):
        return value
    if isinstance(value, dict):
        return Check(ok=bool(value.get("ok")), detail=str(value.get("detail", "")))
    return Check(ok=bool(value), detail="ok" if value else "failed")


def _team_view(team: Team) -> TeamView:
    from ..hosts import console

    summary = console.team_summary(team)
    return TeamView(
        name=team.name,
        pattern=team.pattern_name,
        description=team.description,
        participants=[Participant(**p) for p in summary["participants"]],
        termination=summary["termination"],
        model=console.model_label(team),
    )
