"""A child process for the long-team kill -9 test: start a long round-robin task on a SQLite
runtime, say when it runs, and work until killed."""

from __future__ import annotations

import asyncio
import sys

from cadre import LocalRuntime, Registry
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, Tasks

LENGTH = 1_500


def long_team(registry: Registry) -> RoundRobinTeam:
    """Two assistants on the offline model (deterministic), `LENGTH` messages."""
    return RoundRobinTeam(
        "long",
        [Assistant("a", system_message="You are a."), Assistant("b", system_message="You are b.")],
        termination=MaxMessages(max_messages=LENGTH),
    ).register(registry)


async def main(path: str) -> None:
    registry = Registry()
    team = long_team(registry)
    async with LocalRuntime.sqlite(path, registry=registry) as rt:
        await Tasks(rt).submit(team, "Talk for a long time", task_id="long-task")
        rt.store.flush()  # type: ignore[attr-defined]
        print("submitted", flush=True)
        await rt.run_until_idle()
        print("done", flush=True)
        await asyncio.sleep(3600)  # wait to be killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
