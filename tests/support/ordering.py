"""Agents that expose ordering and interleaving, for runtime and worker tests."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from cadre import Agent, Context, Message, Registry, handler

EVENTS: list[tuple[str, str, int]] = []
"""(agent key, "start" | "end", seq) in the order steps ran, in this process."""


class Step(Message, name="test.order.Step"):
    seq: int
    pause: float = 0.0


class Tracker(Agent):
    class State(BaseModel):
        seqs: list[int] = []

    @handler
    async def on_step(self, msg: Step, ctx: Context) -> None:
        EVENTS.append((ctx.agent_id.key, "start", msg.seq))
        await asyncio.sleep(msg.pause)
        self.state.seqs.append(msg.seq)
        EVENTS.append((ctx.agent_id.key, "end", msg.seq))


def make_registry() -> Registry:
    registry = Registry()
    registry.register(Tracker, type="tracker")
    return registry
