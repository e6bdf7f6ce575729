"""A local runtime with its own registry, and the task API over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from cadre import LocalRuntime, Registry
from cadre.teams import ChatMessage, TaskInfo, Tasks


@dataclass
class Harness:
    """What a team test needs: a registry to register teams in, the runtime, the task API."""

    registry: Registry
    runtime: LocalRuntime
    tasks: Tasks

    async def run(self, team, task: str) -> tuple[TaskInfo, list[ChatMessage]]:  # type: ignore[no-untyped-def]
        """Register `team`, submit `task`, run until idle; the status and transcript."""
        team.register(self.registry)
        task_id = await self.tasks.submit(team, task)
        await self.runtime.run_until_idle()
        return await self.tasks.status(task_id), await self.tasks.messages(task_id)


def speakers(messages: list[ChatMessage]) -> list[str]:
    """The source of every text message, in order."""
    return [m.source for m in messages if m.kind == "text"]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    registry = Registry()
    async with LocalRuntime(registry=registry) as runtime:
        yield Harness(registry, runtime, Tasks(runtime))
