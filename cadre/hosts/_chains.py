"""Per-agent order inside a worker: one chain of places per agent.

Every message for an agent, from the broker or delivered locally, takes the next place in
its agent's chain when it arrives (without awaiting, so in arrival order) and runs once the
place before it has left. Messages for different agents run concurrently. A chain also
knows which of its broker deliveries are still waiting (so a step may take several at once,
see `cadre.hosts._deliveries`), and whether it was returned to the broker (then nothing later
of that agent runs here until the chain ends).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

P = TypeVar("P")


class AgentChains(Generic[P]):
    """The chains of places per agent (None: envelopes that could not be read), the places
    not yet started, and the count of places taken and not yet settled."""

    def __init__(self) -> None:
        self._chains: dict[str | None, asyncio.Future[None]] = {}  # agent -> its last place
        self._joins: dict[str | None, int] = {}  # agent -> places taken in its chain so far
        self._waiting: dict[str, list[P]] = {}  # agent -> its broker places not yet started
        self._requeued: set[str] = set()  # agents whose chain was returned to the queue
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        """Places taken and not yet settled."""
        return self._in_flight

    def join(self, agent: str | None) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """Take the next place in `agent`'s chain (without awaiting: in call order); the
        previous holder's future (None: first) and this one's, for `leave`. Every place
        taken is also `settled` once."""
        self._in_flight += 1
        self._idle.clear()
        self._joins[agent] = self._joins.get(agent, 0) + 1
        previous = self._chains.get(agent)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chains[agent] = mine
        return previous, mine

    def agents(self) -> list[str | None]:
        """The agents with a place taken that has not left yet."""
        return list(self._chains)

    def order(self, agent: str | None) -> int:
        """How many places `agent`'s chain has had so far (the last one's number)."""
        return self._joins[agent]

    def leave(self, agent: str | None, mine: asyncio.Future[None]) -> None:
        """The place ends: the agent's next one may start."""
        mine.set_result(None)
        if self._chains.get(agent) is mine:  # the last in the chain: it ends here
            del self._chains[agent]
            del self._joins[agent]
            if agent is not None:
                self._waiting.pop(agent, None)
                self._requeued.discard(agent)

    def settled(self) -> None:
        """A place is settled (acknowledged, returned, or reported)."""
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def idle(self) -> None:
        """Wait until every place taken is settled."""
        await self._idle.wait()

    def wait(self, agent: str, place: P) -> None:
        """`place` (a broker delivery's) waits in `agent`'s chain."""
        self._waiting.setdefault(agent, []).append(place)

    def waiting(self, agent: str) -> list[P]:
        """`agent`'s waiting places, in chain order."""
        return self._waiting.get(agent, [])

    def start(self, agent: str, place: P) -> None:
        """`place` is no longer waiting (it runs, or ran in an earlier place's step)."""
        waiting = self._waiting.get(agent)
        if waiting and place in waiting:
            waiting.remove(place)

    def requeue(self, agent: str) -> None:
        """`agent`'s chain went back to the broker: its later places do not run here."""
        self._requeued.add(agent)

    def requeued(self, agent: str | None) -> bool:
        """Whether `agent`'s chain went back to the broker."""
        return agent is not None and agent in self._requeued
