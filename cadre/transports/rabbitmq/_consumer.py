"""`RabbitMQConsumer`: the `Consumer` port (`cadre.transports.base`) over the partition
queues, one envelope at a time per recipient, for hosts that pull envelopes one by one.

The worker consumes deliveries itself (`RabbitMQTransport.consume`); this consumer is the
same transport seen through the port every adapter implements, and the conformance suite
proves it. It consumes every partition; each delivery's envelopes wait per recipient;
`receive` hands out the next envelope whose recipient has none handed out; an envelope
whose id is already waiting or handed out is a duplicate and is dropped; `retry` hands the
envelope out again after the delay, before the recipient's later ones; a delivery is
acknowledged once all its envelopes are. Unreadable envelopes go to the dead-letter queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from ..base import Delivery
from ._consume import Delivery as Message
from ._transport import RabbitMQTransport


@dataclass(slots=True)
class Held(Delivery):
    """An envelope handed out by `RabbitMQConsumer`, with the message it came in."""

    message: Message | None = None


class RabbitMQConsumer:
    """Receives envelopes from every partition queue of `transport` (see the module doc)."""

    def __init__(self, transport: RabbitMQTransport, *, prefetch: int = 64) -> None:
        self.transport, self.prefetch = transport, prefetch
        self._waiting: dict[str, deque[Held]] = {}  # recipient -> envelopes, in order
        self._busy: set[str] = set()  # recipients with an envelope handed out
        self._ids: set[str] = set()  # ids waiting or handed out
        self._left: dict[int, int] = {}  # id(message) -> its envelopes not yet acknowledged
        self._wake = asyncio.Event()
        self._timers: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Consume every partition queue."""
        for partition in range(self.transport.partitions):
            await self.transport.consume(partition, self._on_delivery, prefetch=self.prefetch)

    async def _on_delivery(self, message: Message) -> None:
        kept = []
        for body, envelope in message.items:
            if envelope is None:
                await self.transport.dead_letter(
                    body, reason="envelope_invalid", detail="", attempts=1, letter_id=""
                )
            elif envelope.id not in self._ids:
                self._ids.add(envelope.id)
                kept.append(Held(envelope, message))
        self._left[id(message)] = len(kept)
        if not kept:
            message.ack()
        for held in kept:
            if held.envelope.not_before is not None:
                timer = asyncio.create_task(self._when_due(held))
                self._timers.add(timer)
                timer.add_done_callback(self._timers.discard)
            else:
                self._hold(held)

    async def _when_due(self, held: Held) -> None:
        if await self.transport.until_due(held.envelope):
            self._hold(held)
        else:  # on its way through the next delay bucket: this copy is done
            self._ids.discard(held.envelope.id)
            self._settle(held)

    def _hold(self, held: Held, *, first: bool = False) -> None:
        queue = self._waiting.setdefault(held.envelope.recipient or "", deque())
        if first:
            queue.appendleft(held)
        else:
            queue.append(held)
        self._wake.set()

    async def receive(self) -> Delivery:
        """Wait for the next envelope whose recipient is not busy with another one."""
        while True:
            for recipient, queue in self._waiting.items():
                if queue and recipient not in self._busy:
                    self._busy.add(recipient)
                    return queue.popleft()
            self._wake.clear()
            await self._wake.wait()

    async def ack(self, delivery: Delivery) -> None:
        """The envelope is handled: its message is acknowledged once all its envelopes are."""
        assert isinstance(delivery, Held)
        recipient = delivery.envelope.recipient or ""
        self._busy.discard(recipient)
        self._ids.discard(delivery.envelope.id)
        self._settle(delivery)
        self._wake.set()

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """Hand the envelope out again after `delay` seconds, attempt raised by one, before
        the recipient's later envelopes (the recipient stays busy meanwhile)."""
        assert isinstance(delivery, Held)
        envelope = delivery.envelope.model_copy(update={"attempt": delivery.envelope.attempt + 1})
        again = Held(envelope, delivery.message)

        def back() -> None:
            self._busy.discard(envelope.recipient or "")
            self._hold(again, first=True)

        asyncio.get_running_loop().call_later(delay, back)

    def _settle(self, held: Held) -> None:
        message = held.message
        if message is None:
            return
        left = self._left[id(message)] - 1
        if left:
            self._left[id(message)] = left
            return
        del self._left[id(message)]
        message.ack()

    async def close(self) -> None:
        """Stop consuming (what is not acknowledged goes back to its queues)."""
        await self.transport.stop_consuming()
        for timer in list(self._timers):
            timer.cancel()
