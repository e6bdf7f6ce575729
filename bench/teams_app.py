"""The team of bench/teams.py's many-tasks workload, as an app module a worker imports.

    CADRE_APP=bench.teams_app cadre worker            # (run from the repository root)

Three offline assistants take turns until the run holds `MANY_MESSAGES` messages (the
task and nine answers); the model waits `BENCH_MODEL_DELAY` seconds (default 0.1) before
each answer, as a slow hosted model would. Importing this module registers the team
(``bench-many``) in the default registry, which is what `cadre worker` and `cadre serve`
serve; bench/teams.py builds its own copies in private registries with `many_team`.
"""

from __future__ import annotations

import asyncio
import os

from pydantic import BaseModel

from cadre.models.base import LLMMessage, ModelClient, ModelResult, ToolSpec
from cadre.models.offline import OfflineClient
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam

MANY_MESSAGES = 10
"""Messages in one many-tasks run: the task, then nine model answers."""
MANY_TEAM = "bench-many"


class DelayedModel:
    """A model client that waits `delay` seconds, then lets `inner` answer.

    It counts the calls waiting at once (`in_flight`, and its high-water mark `peak`):
    in a step-per-message runtime that is how many steps are waiting on the model."""

    def __init__(self, inner: ModelClient, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.in_flight = self.peak = self.calls = 0

    @property
    def model_name(self) -> str:
        """The inner model's name."""
        return self.inner.model_name

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """Sleep `delay`, then the inner model's answer."""
        self.in_flight += 1
        self.calls += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return await self.inner.create(messages, tools, output_schema)


def many_team(model: ModelClient, name: str = MANY_TEAM) -> RoundRobinTeam:
    """Three assistants on `model`, round robin, `MANY_MESSAGES` messages (not registered)."""
    return RoundRobinTeam(
        name,
        [
            Assistant("bench-planner", system_message="You are a planner.", model=model),
            Assistant("bench-writer", system_message="You are a writer.", model=model),
            Assistant("bench-critic", system_message="You are a critic.", model=model),
        ],
        termination=MaxMessages(max_messages=MANY_MESSAGES),
    )


model = DelayedModel(OfflineClient(), float(os.environ.get("BENCH_MODEL_DELAY", "0.1")))
team = many_team(model).register()
