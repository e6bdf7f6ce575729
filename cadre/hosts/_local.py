"""Local delivery: a message between two agents of a partition this worker owns runs here,
without the broker.

A delivery from a partition's queue proves this worker is that partition's active
consumer, so a message a step sends to an agent of the same partition (in practice: an
agent with the same key, the same task) skips the broker and runs here: it is durable
already, in the sender's committed outbox, and counts as confirmed once its recipient's
step has committed (`HANDLING`, see `cadre.hosts._confirms`). It takes its place in the
recipient's chain when it is published, so local and broker messages keep their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..envelope import Envelope
from ..errors import TransportError
from ..transports.rabbitmq import partition_of
from ._chains import AgentChains
from ._confirms import HANDLING


class LocalDelivery:
    """Routes and runs local deliveries (the `LocalDelivery` of `cadre.hosts._confirms`)."""

    def __init__(
        self,
        chains: AgentChains[Any],
        run: Callable[[Envelope], Awaitable[bool]],
        slots: asyncio.Semaphore,
        *,
        partitions: int,
        owns: Callable[[int], bool],
        stopping: Callable[[], bool],
    ) -> None:
        self._chains, self._run, self._slots = chains, run, slots
        self._partitions, self._owns, self._stopping = partitions, owns, stopping
        self.handled = 0

    def routes_here(self, envelope: Envelope) -> bool:
        """Whether `envelope` runs here rather than going through the broker: a message due
        now between two agents of one partition (in practice: sharing a key). Every message
        of such a pair takes this path, so they stay in order; if the partition is not this
        worker's when the message's turn comes, `deliver`'s task fails and the sender keeps
        it in its outbox (the partition's next owner publishes it, see `_relay`)."""
        recipient, sender = envelope.recipient, envelope.sender
        if recipient is None or sender is None:
            return False
        if envelope.not_before is not None and envelope.not_before > datetime.now(UTC):
            return False  # a timer: through a delay bucket
        partitions = self._partitions
        return partition_of(recipient, partitions) == partition_of(sender, partitions)

    def deliver(self, envelope: Envelope) -> asyncio.Task[None]:
        """Run `envelope` here, in its agent's chain (placed now, so in publish order).

        The task ends once the recipient's step has committed (or dead-lettered it): that
        is the sender's confirm. It raises `TransportError` if the worker is stopping or
        the partition is no longer its own when the envelope's turn comes: the sender's
        `Confirms` then keeps the envelope in the sender's outbox."""
        previous, mine = self._chains.join(envelope.recipient)
        return asyncio.create_task(self._local(envelope, previous, mine))

    async def _local(
        self, envelope: Envelope, previous: asyncio.Future[None] | None, mine: asyncio.Future[None]
    ) -> None:
        agent = envelope.recipient
        assert agent is not None
        HANDLING.set(envelope)  # its step's commit confirms it (this task's context only)
        try:
            if previous is not None:
                await previous
            async with self._slots:
                part = partition_of(agent, self._partitions)
                stopping = self._stopping()
                if stopping or self._chains.requeued(agent) or not self._owns(part):
                    self._chains.requeue(agent)  # what follows for the agent is not run either
                    why = "stopping" if stopping else f"not owning partition {part}"
                    raise TransportError(f"{envelope.id} not run here: the worker is {why}")
                if not await self._run(envelope):  # the partition's next owner retries it
                    self._chains.requeue(agent)
                    raise TransportError(f"{envelope.id} not run: the worker is stopping")
            self.handled += 1
        finally:
            self._chains.leave(agent, mine)
            self._chains.settled()
