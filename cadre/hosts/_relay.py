"""The outbox relay: outboxes a crash left behind are published by their agents' owners.

An outbox that a crash left stored (nothing else would publish it) is found by every
worker's relay, which looks for outboxes unchanged for ``relay_after`` seconds and sends
each such agent a flush message (`FLUSH_MESSAGE`) through the broker: the owner of the
agent's partition publishes it in the agent's chain (`Step.flush_outbox`), so it keeps its
place before the agent's later messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..envelope import Envelope, new_id, utcnow
from ..ids import AgentId
from ._confirms import Confirms
from ._steps import FLUSH_MESSAGE

log = logging.getLogger("cadre.worker")

RELAY_SPACING = 20
"""The relay waits at least this many times its last pass's duration before the next."""

Stale = Callable[[float], Awaitable[Sequence[tuple[AgentId, str, Any]]]]
"""A store's ``stale_outboxes(older_than)``: (agent, etag, outbox) unchanged that long."""


class Sender(Protocol):
    """Where flush messages go (the broker)."""

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Send envelopes, each to its recipient."""
        ...


class OutboxRelay:
    """Asks the owners of left-behind outboxes to publish them; counts them (`relayed`)."""

    def __init__(
        self, stale: Stale | None, confirms: Confirms, sender: Sender, *, relay_after: float
    ) -> None:
        self._stale, self._confirms, self._sender = stale, confirms, sender
        self._after = relay_after
        self._flushed: dict[tuple[str, str], float] = {}  # (agent, etag) -> when asked
        self.relayed = 0

    async def run(self) -> None:
        """Every `relay_after / 2` s (±20 %), but at least `RELAY_SPACING` times the last
        pass's duration after it: the store's query is a sequential scan, so on a large
        table the relay stays a small share of the database's time. Returns at once when
        the store cannot find stale outboxes or the relay is off (``relay_after <= 0``)."""
        stale, after = self._stale, self._after
        if stale is None or after <= 0:
            return
        pause = after / 2
        while True:
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            started = time.monotonic()
            try:
                self.relayed += await self.relay_once(stale, after)
            except Exception as exc:  # the store or broker is away: try again later
                log.warning("the outbox relay failed: %s", exc)
            took = time.monotonic() - started
            pause = max(after / 2, RELAY_SPACING * took)
            if pause > after / 2:
                log.info("the outbox relay took %.2f s: next pass in about %.0f s", took, pause)

    async def relay_once(self, stale: Stale, older_than: float) -> int:
        """For every outbox unchanged for `older_than` s that this worker is not publishing
        itself, send its agent a flush message through the broker. Returns how many agents
        were asked."""
        now = time.monotonic()
        self._flushed = {k: t for k, t in self._flushed.items() if now - t < 4 * older_than}
        asked = []
        for agent_id, etag, _outbox in await stale(older_than):
            key = str(agent_id)
            if self._confirms.in_flight(key) or (key, etag) in self._flushed:
                continue  # under way here, or asked already (lost ones are asked for)
            self._flushed[key, etag] = now
            asked.append(key)
        if asked:
            log.info("asking %d agents to publish the outboxes a crash left", len(asked))
            await self.send_flushes(asked)
        return len(asked)

    async def send_flushes(self, agents: list[str]) -> None:
        """Ask the owners of `agents` (through the broker) to publish their outboxes."""
        if agents:
            await self._sender.send(
                [
                    Envelope(
                        id=new_id(),
                        message=FLUSH_MESSAGE,
                        version=1,
                        payload={},
                        task_id="cadre.relay",
                        recipient=agent,
                        created_at=utcnow(),
                    )
                    for agent in agents
                ]
            )
