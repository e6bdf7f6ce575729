"""Agents the Functions tests add to the app (``CADRE_APP=agents,tests.functions.flaky_agents``):
one whose handler fails on demand, and a team whose only participant always fails."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from cadre import Agent, Context, Message, handler
from cadre.teams import MaxMessages, Participant, RequestTurn, RoundRobinTeam, TurnResult


class Poke(Message, name="fntest.Poke", version=1):
    """Fails while the delivery attempt is at most `fail_times`."""

    fail_times: int = 0


class Flaky(Agent, type="fntest.flaky"):
    """Counts pokes; fails on purpose while the attempt is low enough, or during an
    `outage` (a dependency down: a test switches it off, then redrives)."""

    outage: ClassVar[bool] = False

    class State(BaseModel):
        pokes: int = 0

    @handler
    async def poke(self, msg: Poke, ctx: Context) -> None:
        if self.outage or ctx.envelope.attempt <= msg.fail_times:
            raise RuntimeError(f"failing on purpose (attempt {ctx.envelope.attempt})")
        self.state.pokes += 1


class Breaker(Agent, type="fntest.breaker"):
    """A team participant whose every turn fails."""

    @handler
    async def turn(self, msg: RequestTurn, ctx: Context) -> TurnResult:
        raise RuntimeError("the breaker always breaks")


fragile = RoundRobinTeam(
    "fragile",
    [Participant("breaker", agent_type="fntest.breaker")],
    termination=MaxMessages(max_messages=3),
).register()
