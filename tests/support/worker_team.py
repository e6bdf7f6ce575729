"""A team for the worker fault tests (``CADRE_APP=tests.support.worker_team``).

Three offline assistants take 15 turns after the task (16 messages); the model waits 50 ms
per call, so a team task lasts long enough for a fault to land in the middle of it. Every
agent of one task shares the task's key, so one worker runs the whole task without the
broker in between.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from cadre.models.base import LLMMessage, ModelResult, ToolSpec
from cadre.models.offline import OfflineClient
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam

TURNS = 16


class SlowOffline(OfflineClient):
    """The offline model, 50 ms per call (deterministic all the same)."""

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        await asyncio.sleep(0.05)
        return await super().create(messages, tools, output_schema)


model = SlowOffline()
team = RoundRobinTeam(
    "fault-relay",
    [
        # names of their own: an Assistant's name is its agent type, and the app's default
        # team (agents/team.py) has a planner, a writer and a critic in the same registry
        Assistant("fault-planner", system_message="You are a planner. List steps.", model=model),
        Assistant("fault-writer", system_message="You are a writer. Write it up.", model=model),
        Assistant(
            "fault-critic", system_message="You are a critic. Say what's missing.", model=model
        ),
    ],
    termination=MaxMessages(max_messages=TURNS),
).register()


async def undisturbed_transcripts(texts: list[str]) -> list[list[tuple[str, str]]]:
    """The transcripts (source, content) of `team` on each text, run in-process: what a run
    through workers must give whatever happens to them meanwhile."""
    from cadre.hosts.local import LocalRuntime
    from cadre.teams.tasks import Tasks

    async with LocalRuntime() as local:
        reference = Tasks(local)
        ids = [await reference.submit(team, text) for text in texts]
        await local.run_until_idle()
        return [[(m.source, m.content) for m in await reference.messages(i)] for i in ids]
