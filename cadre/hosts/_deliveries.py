"""Broker deliveries: each message's envelopes take their places in their agents' chains
and run there; messages waiting behind each other for one agent run as one step.

The channel's prefetch lets the broker hand over several messages at once, and they run
concurrently when they are for different agents; messages for one agent wait for each
other, in delivery order (one chain per agent, see `_chains`; local deliveries join the
same chains). A message is acknowledged only after its steps have committed and their
outboxes are confirmed (`_settle`). A delivery of a partition being released (`held`) does
not start: it stays unacknowledged, and the channel's close returns it to its queue in its
place, for the partition's next consumer (`cadre.hosts._rebalance`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope
from ..transports.rabbitmq import Delivery
from ._chains import AgentChains
from ._settle import Settling, quiet_if_lost
from ._steps import FLUSH_MESSAGE, StepRunner

Items = list[tuple[bytes, Envelope | None]]


@dataclass(eq=False, slots=True)
class Place:
    """One agent's envelopes of one delivery, holding a place in the agent's chain."""

    delivery: Delivery
    items: Items
    order: int  # its place among all of the chain's places (local deliveries' too)
    absorbed: tuple[Envelope, ...] | None = None  # run in an earlier place's step: its outbox
    go: asyncio.Future[None] | None = None  # set when the place before it left, or absorbed
    alone: bool = False  # in a step of several that failed: it runs on its own


class Deliveries:
    """Runs broker deliveries in their agents' chains and settles them."""

    def __init__(
        self,
        chains: AgentChains[Place],
        steps: StepRunner,
        settling: Settling,
        slots: asyncio.Semaphore,
        *,
        step_batch: int,
        seen_limit: int,
        stopping: Callable[[], bool],
        held: Callable[[int], bool] = lambda _partition: False,
    ) -> None:
        self._chains, self._steps, self._settling, self._slots = chains, steps, settling, slots
        self._limit = min(step_batch, seen_limit)
        self._stopping, self._held = stopping, held
        self._partitions: Counter[int] = Counter()  # partition -> deliveries not yet settled
        self.handled_together = 0

    def in_flight(self, partition: int) -> int:
        """Deliveries of `partition` taken and not yet settled (or given up)."""
        return self._partitions[partition]

    async def on_delivery(self, delivery: Delivery) -> None:
        """Run a delivery's envelopes and settle it.

        Deliveries start in the order the broker sent them, and nothing here awaits before
        the message's envelopes take their places in their agents' chains: per-agent order
        is delivery order. A message may carry several envelopes; those of one agent run
        one after another in one place of its chain."""
        self._partitions[delivery.partition] += 1
        try:
            await self._run(delivery)
        finally:
            self._partitions[delivery.partition] -= 1
            if not self._partitions[delivery.partition]:
                del self._partitions[delivery.partition]

    async def _run(self, delivery: Delivery) -> None:
        chains = self._chains
        groups: dict[str | None, Items] = {}
        for body, envelope in delivery.items:
            groups.setdefault(envelope.recipient if envelope else None, []).append((body, envelope))
        places = []
        for agent, items in groups.items():
            previous, mine = chains.join(agent)
            place = Place(delivery, items, chains.order(agent))
            if agent is not None:
                chains.wait(agent, place)
            places.append((agent, place, previous, mine))
        runs = [self._run_group(agent, place, previous) for agent, place, previous, _ in places]
        returned: list[str | None] = []
        try:
            try:
                if len(runs) == 1:
                    outcomes: list[Any] = [await _outcome(runs[0])]
                else:
                    outcomes = await asyncio.gather(*runs, return_exceptions=True)
                for (agent, *_), outcome in zip(places, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        quiet_if_lost(delivery).error(
                            "delivery %s failed; returning it to its queue",
                            delivery.id,
                            exc_info=outcome,
                        )
                    if outcome is None or isinstance(outcome, BaseException):
                        returned.append(agent)
                if returned:  # before any of its agents' next messages may start
                    with contextlib.suppress(Exception):  # a closed channel redelivers it
                        await self._settling.requeue(delivery, returned)
            finally:
                for agent, _, _, mine in places:
                    chains.leave(agent, mine)  # the agent's next message may start
            if not returned and _SKIPPED not in outcomes:
                await self._settling.acknowledge(delivery, [e for o in outcomes for e in o])
        finally:
            for _ in places:
                chains.settled()

    async def _run_group(
        self, agent: str | None, place: Place, previous: asyncio.Future[None] | None
    ) -> Any:
        """Run one agent's envelopes of one delivery in order, once its chain reaches them:
        the envelopes to be confirmed before the ack, None to return the message to its
        queue, or `_SKIPPED` when its channel is gone (the broker redelivers it).

        The deliveries waiting right behind it in the agent's chain run in the same step
        when they can (`_together`); their places then only hand on the outcome."""
        if place.absorbed is None and previous is not None and not previous.done():
            # Wait for the place before to leave, unless an earlier place's step takes this
            # one along first (`_together` sets `go` then): the places a step absorbed end
            # together, not each one after the delivery before it has ended.
            go = place.go = asyncio.get_running_loop().create_future()
            previous.add_done_callback(functools.partial(_proceed, go))
            await go
        if agent is not None:
            self._chains.start(agent, place)
        if place.absorbed is not None:  # committed in an earlier place's step
            return place.absorbed
        delivery, confirm = place.delivery, list[Envelope]()
        async with self._slots:
            for n, (body, envelope) in enumerate(place.items):
                if delivery.closed or self._held(delivery.partition):
                    return _SKIPPED  # the channel's close returns it, in its place
                if self._stopping() or self._chains.requeued(agent):
                    return None
                if n == 0 and agent is not None:
                    published = await self._together(agent, place)
                    if published is not None:
                        return published
                published = await self._steps.handle(body, envelope)
                if published is None:
                    return None
                confirm.extend(published)
        return tuple(confirm)

    async def _together(self, agent: str, place: Place) -> tuple[Envelope, ...] | None:
        """Run `place`'s envelopes and those of the places right behind it in the agent's
        chain (deliveries already here, not local ones) as one step (`Processor.
        process_many`): one load and one commit for up to ``step_batch`` messages. Their
        places get the step's outbox to confirm. None: nothing ran (one at a time then)."""
        limit = self._limit
        if limit < 2 or place.alone or not _plain(place.items):
            return None
        later, order, count = [], place.order, len(place.items)
        for other in self._chains.waiting(agent):
            if other.order != order + 1 or other.alone or not _plain(other.items):
                break
            if count + len(other.items) > limit or other.delivery.closed:
                break
            if self._held(other.delivery.partition):
                break
            later.append(other)
            order, count = other.order, count + len(other.items)
        if count < 2:
            return None
        envelopes = [env for p in (place, *later) for _, env in p.items if env is not None]
        processed = await self._steps.processor.process_many(envelopes)
        if processed is None:  # each runs alone now (a failed step of several ran them)
            for p in (place, *later):
                p.alone = True
            return None
        result = processed[0].result
        published = result.published if result is not None else ()
        for other in later:
            other.absorbed = published
            self._chains.start(agent, other)
            if other.go is not None:
                _proceed(other.go)
        self.handled_together += len(envelopes)
        return published


def _proceed(go: asyncio.Future[None], _previous: object = None) -> None:
    if not go.done():
        go.set_result(None)


def _plain(items: Items) -> bool:
    """Whether these envelopes may join a step of several: readable, due, not a flush."""
    return all(
        env is not None and env.not_before is None and env.message != FLUSH_MESSAGE
        for _, env in items
    )


_SKIPPED = object()
"""A delivery whose channel closed (or whose partition is being released) before its turn:
neither acknowledged nor returned."""


async def _outcome(run: Any) -> Any:
    """`run`'s result, or the exception it raised (as `asyncio.gather` would return it)."""
    try:
        return await run
    except Exception as exc:
        return exc
