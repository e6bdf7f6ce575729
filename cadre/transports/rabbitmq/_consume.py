"""Consuming a partition queue: each AMQP message becomes a `Delivery` of its envelopes,
settled once, by an acknowledgement (in runs, see `_acks`) or by a return to its queue."""

from __future__ import annotations

from typing import Any

from ...envelope import Envelope
from ...errors import EnvelopeInvalid
from ._acks import AckRuns
from ._topology import split_body


class Delivery:
    """One message from partition queue `partition`: its envelopes in order, as
    ``(bytes, Envelope | None)`` pairs (None: unreadable, its bytes go to the dead-letter
    queue), and how to settle it. A batch (see `split_body`) is one delivery."""

    __slots__ = ("_acks", "_message", "items", "partition")

    def __init__(self, message: Any, partition: int, acks: AckRuns) -> None:
        self._message, self._acks, self.partition = message, acks, partition
        items: list[tuple[bytes, Envelope | None]] = []
        for body in split_body(message.body, message.content_type):
            try:
                envelope: Envelope | None = Envelope.from_bytes(body)
            except EnvelopeInvalid:
                envelope = None  # the processor dead-letters it with the reason
            items.append((body, envelope))
        self.items = items

    @property
    def id(self) -> str | None:
        """The AMQP message id, for logs."""
        return self._message.message_id  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        """Whether the channel it came on is gone: the broker redelivers it, so it must be
        neither run nor settled any more."""
        return channel_closed(self._message)

    def channel(self) -> Any:
        """The channel it came on (raises when that channel is closed)."""
        return self._message.channel

    def ack(self) -> None:
        """Acknowledge it soon, in this loop iteration's run of acks; raises when its
        channel is closed (the broker then redelivers it)."""
        self._acks.ack(self._message)

    async def requeue(self) -> None:
        """Return it to the head of its queue, for this or the partition's next consumer."""
        await self._message.nack(requeue=True)
        self._acks.settled_alone(self._message)


def channel_closed(message: Any) -> bool:
    """Whether the delivery's channel is gone (its unacknowledged messages are redelivered)."""
    try:
        channel = message.channel  # aio-pika raises when the channel is closed
    except Exception:
        return True
    return bool(getattr(channel, "is_closed", False))
