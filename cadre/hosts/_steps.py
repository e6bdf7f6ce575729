"""Running a worker's steps: retries in place, timers, flush requests, dead letters.

A failing handler is retried in place (sleep, then run again, the message still
unacknowledged), so nothing later for that agent overtakes it; a stopping worker gives the
message back instead. Dead letters go to the store (``cadre dlq``, by the processor) and to
the broker's dead-letter queue with the reason in headers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..envelope import Envelope
from ..processing import Disposition, Processed, Processor
from ..transports.rabbitmq import RabbitMQTransport

log = logging.getLogger("cadre.worker")

FLUSH_MESSAGE = "cadre.FlushOutbox"
"""A worker-to-worker message: publish the recipient's stored outbox (see `_relay`)."""


class StepRunner:
    """Runs envelopes through the processor until they are handled or dead-lettered."""

    def __init__(
        self,
        processor: Processor,
        transport: RabbitMQTransport,
        stopping: Callable[[], bool],
    ) -> None:
        self.processor = processor
        self._transport = transport
        self._stopping = stopping

    async def handle(self, body: bytes, envelope: Envelope | None) -> tuple[Envelope, ...] | None:
        """Run a broker delivery's envelope: the envelopes to be confirmed before the ack,
        or None: return the message to its queue (the worker is stopping while the handler
        retries)."""
        if envelope is not None and envelope.message == FLUSH_MESSAGE:
            agent_id = envelope.recipient_id
            if agent_id is not None:
                return await self.processor.step.flush_outbox(agent_id)
        if envelope is not None and not await self._transport.until_due(envelope):
            return ()  # not due yet: on its way through the next delay bucket
        processed = await self._until_settled(envelope or body, envelope)
        if processed is None:
            return None
        if processed.dead_letter is not None:
            await self.publish_dead_letter(body, processed)
        return processed.result.published if processed.result is not None else ()

    async def run_local(self, envelope: Envelope) -> bool:
        """Run a local delivery; False: not run, the worker is stopping (the partition's
        next owner runs it). (`_until_settled` written out: this is every local hop.)"""
        attempt = envelope.attempt
        while True:
            try:
                processed = await self.processor.process(envelope, attempt=attempt)
            except Exception as exc:  # the store could not even record a dead letter
                processed = self._failed(exc, attempt)
            if processed.disposition is not Disposition.RETRY:
                break
            if self._stopping():
                return False
            await asyncio.sleep(processed.retry_after or 0.0)
            attempt += 1
        if processed.dead_letter is not None:
            await self.publish_dead_letter(envelope.to_bytes(), processed)
        return True

    async def _until_settled(
        self, body: Envelope | bytes, envelope: Envelope | None
    ) -> Processed | None:
        attempt = envelope.attempt if envelope is not None else 1
        while True:
            processed = await self.process(body, attempt)
            if processed.disposition is not Disposition.RETRY:
                return processed
            if self._stopping():  # back to the head of its queue for the next owner
                return None
            await asyncio.sleep(processed.retry_after or 0.0)
            attempt += 1

    async def publish_dead_letter(self, body: bytes, processed: Processed) -> None:
        """The dead letter's copy in the broker's dead-letter queue."""
        letter = processed.dead_letter
        assert letter is not None
        await self._transport.dead_letter(
            body,
            reason=letter.reason,
            detail=letter.detail,
            attempts=letter.attempts,
            letter_id=letter.id,
        )

    async def process(self, body: Envelope | bytes, attempt: int) -> Processed:
        """One attempt; a failure to record even a dead letter becomes a retry."""
        try:
            return await self.processor.process(body, attempt=attempt)
        except Exception as exc:  # the store could not even record a dead letter
            return self._failed(exc, attempt)

    def _failed(self, exc: Exception, attempt: int) -> Processed:
        log.exception("processing failed; retrying", exc_info=exc)
        delay = self.processor.policy.delay(attempt)
        return Processed(Disposition.RETRY, retry_after=delay, error=str(exc))
