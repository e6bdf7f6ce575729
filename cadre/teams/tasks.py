"""The task lifecycle API: submit a task to a team, read its status and transcript, give
human input, stop or cancel it.

    tasks = Tasks(runtime)
    task_id = await tasks.submit(team, "Plan a three-day trip to Lisbon")
    await runtime.run_until_idle()
    print((await tasks.status(task_id)).status, await tasks.messages(task_id))

Reads need only the store: the root manager (``cadre.team/<task id>``) keeps the status and
usage in its state (one point read) and the transcript in its log (read by page, by
message number), so another process (the HTTP API) reads them too. Writes are messages to
that manager.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel

from ..envelope import new_id
from ..errors import ConfigurationError, NotFound, TaskFailed, TaskStateError
from ..ids import AgentId
from ..messages import Message
from ..migrations import load_state
from ..models.base import Usage
from ..runtime import Sender
from ..stores.base import StateStore
from .manager import FINISHED, MANAGER_TYPE, TaskStatus, Team, TeamCatalog, TeamState
from .messages import CancelTask, ChatMessage, ContinueTask, HumanInput, StartTask, StopTask


class TaskInfo(BaseModel):
    """A task as a client sees it."""

    task_id: str
    team: str
    status: TaskStatus
    task: str
    result: str | None
    stop_reason: str | None
    speaker: str | None
    prompt: str | None
    messages: int
    usage: Usage
    usage_by_agent: dict[str, Usage]
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, task_id: str, st: TeamState) -> TaskInfo:
        """The view of a root manager's state."""
        return cls(
            task_id=task_id,
            team=st.team,
            status=st.status,
            task=st.task,
            result=st.result,
            stop_reason=st.stop_reason,
            speaker=st.speaker,
            prompt=st.prompt,
            messages=st.messages,
            usage=st.usage,
            usage_by_agent=st.usage_by_agent,
            started_at=st.started_at,
            finished_at=st.finished_at,
        )


class Tasks:
    """Submit, read, answer and cancel tasks over a runtime (`cadre.runtime.Sender`: any
    host's runtime)."""

    def __init__(self, runtime: Sender) -> None:
        self.runtime = runtime
        self._submitted: dict[str, str] = {}

    async def submit(self, team: Team | str, task: str, *, task_id: str | None = None) -> str:
        """Start `team` (registered in the runtime's process) on `task`; returns the task id.

        A `task_id` that names a task already started is refused (`TaskStateError`): to go
        on with it, use `continue_task`."""
        name = self._registered(team)
        if task_id is None:
            task_id = new_id()
        elif (await self.runtime.store.load(AgentId(MANAGER_TYPE, task_id))).state is not None:
            raise TaskStateError(
                f"task {task_id} exists already; continue it with continue_task() "
                "(POST /api/tasks/{id}/messages, cadre run --continue)"
            )
        await self.runtime.send(
            AgentId(MANAGER_TYPE, task_id), StartTask(team=name, task=task), task_id=task_id
        )
        self._submitted[task_id] = name
        return task_id

    def _registered(self, team: Team | str) -> str:
        """The team's name, once it is registered in the runtime's registry."""
        registry = self.runtime.registry
        entry = registry.types.get(MANAGER_TYPE)
        catalog = entry.factory if entry is not None else None
        if isinstance(team, Team):
            if not isinstance(catalog, TeamCatalog) or catalog.teams.get(team.name) is not team:
                team.register(registry)
            return team.name
        if not isinstance(catalog, TeamCatalog):
            raise ConfigurationError(f"no team is registered in this runtime (asked for {team!r})")
        return catalog.get(team).name

    async def state(self, task_id: str) -> TeamState:
        """The manager's stored state (`NotFound` for a task nobody submitted)."""
        record = await self.runtime.store.load(AgentId(MANAGER_TYPE, task_id))
        if record.state:
            state = load_state(MANAGER_TYPE, TeamState, record)
            assert isinstance(state, TeamState)
            return state
        if task_id in self._submitted:
            return TeamState(team=self._submitted[task_id])
        raise NotFound(f"no task {task_id!r} in this store (or it has not started yet)")

    async def status(self, task_id: str) -> TaskInfo:
        """The task's status, result, whose turn it is, and its token usage."""
        return TaskInfo.of(task_id, await self.state(task_id))

    async def messages(
        self, task_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[ChatMessage]:
        """The transcript from message number `after` on, at most `limit` messages (None:
        all). For polling, pass how many you have; a page costs the same at any length."""
        return await transcript(self.runtime.store, task_id, after=after, limit=limit)

    async def give_input(self, task_id: str, text: str) -> None:
        """Answer the user proxy the task waits on; `TaskStateError` if it is not waiting."""
        st = await self.state(task_id)
        if st.status != "awaiting_input":
            raise TaskStateError(f"task {task_id} is {st.status}, not awaiting_input")
        await self._send(task_id, HumanInput(text=text))

    async def continue_task(self, task_id: str, text: str | None = None) -> None:
        """Run a finished task again with its whole history, `text` as the user's next
        message (None: the team goes on as it was); `TaskStateError` unless it finished."""
        st = await self.state(task_id)
        if st.status not in FINISHED:
            raise TaskStateError(
                f"task {task_id} is {st.status}; only a completed, failed or cancelled task "
                "can be continued"
            )
        await self._send(task_id, ContinueTask(text=text))

    async def wait(self, task_id: str, *, poll: float = 0.05) -> TaskInfo:
        """Wait until the task has finished or awaits input; its status. Raises `TaskFailed`
        with the reason when it failed (bound the wait with ``asyncio.timeout``)."""
        while True:
            try:
                info: TaskInfo | None = await self.status(task_id)
            except NotFound:
                info = None
            if info is not None and info.status in (*FINISHED, "awaiting_input"):
                if info.status == "failed":
                    raise TaskFailed(task_id, info.stop_reason or "failed")
                return info
            await asyncio.sleep(poll)

    async def cancel(self, task_id: str, reason: str = "cancelled") -> None:
        """Cancel the task: it is `cancelled` after the manager's next step."""
        st = await self.state(task_id)
        if st.status in FINISHED:
            raise TaskStateError(f"task {task_id} is already {st.status}")
        await self._send(task_id, CancelTask(reason=reason))

    async def stop(self, task_id: str) -> None:
        """Ask for a graceful stop (fires an `External` termination after the current turn)."""
        await self._send(task_id, StopTask())

    async def _send(self, task_id: str, message: Message) -> None:
        await self.runtime.send(AgentId(MANAGER_TYPE, task_id), message, task_id=task_id)


LOG_PAGE = 1000
"""Entries read from the log in one request when a caller asks for more."""


async def transcript(
    store: StateStore, task_id: str, *, after: int = 0, limit: int | None = None
) -> list[ChatMessage]:
    """A task's transcript from message number `after`, at most `limit` (None: all), read
    from its manager's log; a task stored by state version 1 and not stepped since keeps it
    in its state until then."""
    stream = str(AgentId(MANAGER_TYPE, task_id))
    out: list[ChatMessage] = []
    start = max(after, 0)
    while limit is None or len(out) < limit:
        page = LOG_PAGE if limit is None else min(LOG_PAGE, limit - len(out))
        entries = await store.read_log(stream, start, page)
        out += [ChatMessage.model_validate_json(e.data) for e in entries]
        if len(entries) < page:
            break
        start = entries[-1].seq + 1
    if not out and start == max(after, 0):
        record = await store.load(AgentId(MANAGER_TYPE, task_id))
        if record.state is not None and record.state_version < 2:
            state = load_state(MANAGER_TYPE, TeamState, record)
            assert isinstance(state, TeamState)
            carried = state.carried[start:]
            return carried if limit is None else carried[:limit]
    return out
