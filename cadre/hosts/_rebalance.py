"""Rebalancing: a worker hands the partitions assigned to another member over to it, with
every agent's messages kept in order.

Every worker consumes every partition (single active consumer: the broker delivers a
queue's messages to the first consumer registered, the others stand by), so a crashed
worker's partitions fail over at once. Which partition a worker *should* own comes from
the membership (`_membership.assign`). When a partition's owner is another member, live
for `settle` seconds and present on the broker, this worker *releases* the partition:

1. `hold`: none of its deliveries start any more (they stay unacknowledged, and so do those
   of the agents' later deliveries), and local deliveries to its agents fail back into
   their senders' outboxes (`owns` is False);
2. wait until the deliveries and local deliveries of the partition that had started have
   finished and are acknowledged or returned;
3. close the partition's channel: the broker puts every unacknowledged delivery back in
   its queue, in its original order, and only then makes the next consumer active, so
   nothing of this worker's runs beside the next one's (a basic.cancel would hand over at
   once and keep the deliveries here, breaking the order);
4. ask the senders whose local deliveries failed to publish their outboxes through the
   broker (flush messages, as a stopping worker does);
5. consume the partition again, at the tail of the queue's consumers, as a standby.

Every worker that is not a partition's owner does this once for each new owner, active or
not (it does not know whether it is the active consumer of a queue that has no messages):
afterwards the owner's consumer is the oldest, so the broker makes it active. A worker
that becomes active again on a partition it released to the same owner waits a lease
before it releases it again, so a dead owner is not chased around the standbys.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from ..transports.rabbitmq import partition_of
from ._chains import AgentChains
from ._membership import Membership

log = logging.getLogger("cadre.worker")

SETTLE = 1.5
"""Seconds a member must have been heard before partitions are handed to it."""
DRAIN_POLL = 0.01
"""Seconds between two looks at a releasing partition's deliveries under way."""


class Partitions(Protocol):
    """What rebalancing needs of the broker (`RabbitMQTransport`)."""

    def consumed(self) -> list[int]:
        """The partitions consumed (active or standing by)."""
        ...

    def owns(self, partition: int) -> bool:
        """Whether this process is the partition's active consumer."""
        ...

    def hold(self, partition: int) -> None:
        """Start no more deliveries of the partition."""
        ...

    async def stop_consuming(self, partition: int | None = None) -> None:
        """Send the acks, close the partition's channel."""
        ...


class InFlight(Protocol):
    """Deliveries under way per partition (`Deliveries`)."""

    def in_flight(self, partition: int) -> int:
        """Deliveries of the partition taken and not yet settled."""
        ...


class Rebalancer:
    """Releases the partitions assigned to other members (see the module docstring)."""

    def __init__(
        self,
        membership: Membership,
        transport: Partitions,
        deliveries: InFlight,
        chains: AgentChains[Any],
        *,
        partitions: int,
        consume: Callable[[int], Awaitable[None]],
        lost_senders: Callable[[], Sequence[str]],
        flush: Callable[[list[str]], Awaitable[None]],
        stopping: Callable[[], bool],
        settle: float = SETTLE,
    ) -> None:
        self._membership, self._transport = membership, transport
        self._deliveries, self._chains = deliveries, chains
        self._partitions, self._consume = partitions, consume
        self._lost_senders, self._flush, self._stopping = lost_senders, flush, stopping
        self._settle = settle
        self._released_to: dict[int, tuple[str, float]] = {}  # partition -> owner, when
        self._releasing: dict[int, asyncio.Task[None]] = {}
        self.released = 0  # partitions released (standby ones too)
        self.handed = 0  # released while their active consumer
        self.taken = 0

    def owners(self) -> dict[int, str]:
        """Each partition's owner by the current membership."""
        return self._membership.owners(self._partitions)

    def took(self, partition: int) -> None:
        """This worker became the partition's active consumer (its first delivery came)."""
        self.taken += 1
        owner = self.owners().get(partition)
        mine = owner == self._membership.me.id
        log.info(
            "member %s took partition %d%s",
            self._membership.me.id[:8],
            partition,
            "" if mine or owner is None else f" (member {owner[:8]} owns it: handing it on)",
        )

    async def run(self) -> None:
        """Look at the assignment on every membership change and every heartbeat; release
        what belongs to others. Until cancelled."""
        membership = self._membership
        while not self._stopping():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(membership.heartbeat):  # (wait_for may eat a cancel)
                    await membership.changed.wait()
            membership.changed.clear()
            if not self._stopping():
                await self.rebalance()

    async def rebalance(self) -> None:
        """Start releasing each consumed partition whose owner is another settled member
        (present on the broker), unless released to it already and not taken back."""
        membership = self._membership
        me = membership.me.id
        if membership.age(me) < self._settle:  # not everyone heard yet
            return
        now = time.monotonic()
        present: dict[str, bool] = {}
        for partition, owner in sorted(self.owners().items()):
            if owner == me or partition in self._releasing:
                continue
            if partition not in self._transport.consumed():
                continue
            if membership.age(owner) < self._settle:
                continue
            if self._handed(partition, owner, now):
                continue
            if owner not in present:
                present[owner] = await membership.present(owner)
                if not present[owner]:
                    membership.drop(owner, "its connection is closed")
            if not present[owner]:
                continue
            task = asyncio.create_task(self.release(partition, owner))
            self._releasing[partition] = task
            task.add_done_callback(functools.partial(self._released, partition))

    def _handed(self, partition: int, owner: str, now: float) -> bool:
        """Whether `partition` went to `owner` already and has not come back (or came back
        within a lease: the owner is not in the queue's line, maybe gone)."""
        last = self._released_to.get(partition)
        if last is None or last[0] != owner:
            return False
        return not self._transport.owns(partition) or now - last[1] < self._membership.lease

    def _released(self, partition: int, task: asyncio.Task[None]) -> None:
        self._releasing.pop(partition, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("releasing partition %d failed: %s", partition, task.exception())

    async def release(self, partition: int, owner: str) -> None:
        """Hand `partition` over (see the module docstring)."""
        started = time.monotonic()
        active = self._transport.owns(partition)
        self._transport.hold(partition)
        waited = self._deliveries.in_flight(partition)
        while self._deliveries.in_flight(partition) or self._busy(partition):  # noqa: ASYNC110
            await asyncio.sleep(DRAIN_POLL)  # rare, short: a poll beats an event per place
        await self._transport.stop_consuming(partition)
        self.released += 1
        self.handed += active
        await asyncio.sleep(0)  # failed local deliveries report to their senders
        self._released_to[partition] = (owner, time.monotonic())
        lost = [a for a in self._lost_senders() if partition_of(a, self._partitions) == partition]
        try:
            await self._flush(lost)
        except Exception as exc:  # the relay finds those outboxes later
            log.warning("partition %d: flush messages not sent: %s", partition, exc)
        while not self._stopping():  # back as a standby (a broker away: until it is back)
            try:
                await self._consume(partition)
                break
            except Exception as exc:
                log.warning("partition %d: cannot consume it again yet: %s", partition, exc)
                await asyncio.sleep(self._membership.heartbeat)
        log.info(
            "member %s released partition %d to member %s in %.0f ms (%s; %d deliveries "
            "under way finished first, %d outboxes flushed)",
            self._membership.me.id[:8],
            partition,
            owner[:8],
            1000 * (time.monotonic() - started),
            "was active" if active else "standby or idle",
            waited,
            len(lost),
        )

    def _busy(self, partition: int) -> bool:
        """Whether an agent of `partition` has a place under way (a local delivery)."""
        n = self._partitions
        return any(a is not None and partition_of(a, n) == partition for a in self._chains.agents())

    async def close(self) -> None:
        """Wait for the releases under way."""
        while self._releasing:
            await asyncio.gather(*self._releasing.values(), return_exceptions=True)
