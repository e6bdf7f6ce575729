"""The transport port: how envelopes travel to their recipients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..envelope import Envelope


class Transport(Protocol):
    """Sends envelopes to their recipients.

    Invariants every adapter keeps (proved by ``tests/conformance/test_transport.py``):
    - delivery is at least once: a sent envelope is delivered until it is acknowledged;
    - sending an envelope whose id was sent before may deliver it again, never loses it:
      receivers deduplicate by id (the agent step does);
    - envelopes for one recipient are delivered in the order sent, one at a time;
    - an envelope with `not_before` is not delivered before that time.
    """

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Send envelopes, each to its `recipient`; returns once they are accepted."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(slots=True)  # read-only by convention; frozen costs 4x per construction
class Delivery:
    """One envelope handed to a consumer, to be acknowledged or retried."""

    envelope: Envelope


class Consumer(Protocol):
    """The receiving side of a transport, for hosts that pull (local runtime, workers)."""

    async def receive(self) -> Delivery:
        """Wait for the next envelope whose recipient is not busy with another one."""
        ...

    async def ack(self, delivery: Delivery) -> None:
        """The envelope is handled (or dead-lettered): forget it."""
        ...

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """Deliver the envelope again after `delay` seconds, with its attempt raised by one,
        before any later envelope for the same recipient."""
        ...
