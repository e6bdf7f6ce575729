"""Settling a broker delivery: acknowledged once its steps have committed and their
outboxes are confirmed, or returned to its queue (and the agents' later messages after it)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from ..envelope import Envelope
from ..transports.rabbitmq import Delivery
from ._chains import AgentChains
from ._confirms import Confirms

log = logging.getLogger("cadre.worker")


class Settling:
    """Acknowledges or returns deliveries; counts the acknowledged ones (`handled`)."""

    def __init__(self, confirms: Confirms, chains: AgentChains[Any]) -> None:
        self._confirms, self._chains = confirms, chains
        self.handled = 0

    async def acknowledge(self, delivery: Delivery, published: Sequence[Envelope]) -> None:
        """Ack once the steps' outboxes are confirmed; if one is not, return the message
        (its step is committed: the redelivery republishes the outbox)."""
        try:
            await self._confirms.settle(published)
        except Exception as exc:
            quiet_if_lost(delivery).log(
                logging.WARNING, "delivery %s: %s; returning it to its queue", delivery.id, exc
            )
            with contextlib.suppress(Exception):  # a closed channel redelivers it
                await delivery.requeue()
            return
        try:
            delivery.ack()
        except Exception as exc:  # a closed channel: the broker redelivers it
            quiet_if_lost(delivery).log(
                logging.WARNING, "delivery %s could not be acknowledged: %s", delivery.id, exc
            )
            return
        self.handled += 1

    async def requeue(self, delivery: Delivery, agents: Sequence[str | None]) -> None:
        """Return a delivery to its queue; later ones for `agents` follow it there."""
        for agent in agents:
            if agent is not None:
                self._chains.requeue(agent)
        await delivery.requeue()


class _Quiet:
    """A logger stand-in that drops what it is told: the connection-loss line says it."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Drop the record."""

    def error(self, *args: Any, **kwargs: Any) -> None:
        """Drop the record."""


def quiet_if_lost(delivery: Delivery) -> Any:
    """`log`, or nothing when the delivery's channel is gone: a lost connection fails every
    delivery in flight, and one line (`_worker_log.ConnectionWatch`) reports it."""
    return _Quiet() if delivery.closed else log
