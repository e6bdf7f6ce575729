"""Around the step: parse, retry on conflicts and failures, dead-letter what cannot succeed.

Every host calls `Processor.process` with the bytes (or envelope) it received and settles
the delivery by the `Processed` it gets back:

- ``HANDLED`` / ``DUPLICATE`` / ``DEAD_LETTERED``: acknowledge (complete) the delivery;
- ``RETRY``: deliver it again after ``retry_after`` seconds (abandon / nack / re-enqueue).

Nothing raises out of `process` for bad input or a failing handler; only a store or
transport that cannot record a dead letter lets its error through (the host then leaves
the delivery unacknowledged, and it comes back).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from . import telemetry
from .envelope import Envelope, utcnow
from .errors import ConcurrencyConflict, DeliveryError, EnvelopeInvalid
from .retry import RetryPolicy
from .step import Outcome, Step, StepResult
from .stores.base import DeadLetter

log = logging.getLogger("cadre.processing")


_FAILED = "cadre.DeliveryFailed"


class Disposition(StrEnum):
    """How the host settles a delivery."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"


_OUTCOMES = {
    Disposition.HANDLED: "handled",
    Disposition.DUPLICATE: "duplicate",
    Disposition.RETRY: "retried",
    Disposition.DEAD_LETTERED: "dead_lettered",
}
"""The `cadre.outcome` telemetry attribute of each disposition."""


@dataclass(slots=True)  # read-only by convention; frozen costs 4x per construction
class Processed:
    """The disposition, with the step result, the retry delay or the dead letter."""

    disposition: Disposition
    envelope: Envelope | None = None
    result: StepResult | None = None
    retry_after: float | None = None
    dead_letter: DeadLetter | None = None
    error: str | None = None


def _stepped(envelope: Envelope, result: StepResult) -> Processed:
    """What a step that ran (handled or found a duplicate) settles as."""
    duplicate = result.outcome is Outcome.DUPLICATE
    return Processed(
        Disposition.DUPLICATE if duplicate else Disposition.HANDLED, envelope, result=result
    )


class Processor:
    """Parses, steps, and turns every failure into a retry or a dead letter."""

    def __init__(
        self,
        step: Step,
        *,
        policy: RetryPolicy | None = None,
        conflict_retries: int = 50,
    ) -> None:
        self.step = step
        self.store = step.store
        self.policy = policy or RetryPolicy()
        self.conflict_retries = conflict_retries

    async def process(
        self, body: bytes | str | Envelope, *, attempt: int | None = None
    ) -> Processed:
        """Handle one delivery. `attempt` overrides the envelope's (a broker's count)."""
        if isinstance(body, Envelope):
            envelope = body
        else:
            try:
                envelope = Envelope.from_bytes(body)
            except EnvelopeInvalid as exc:
                raw = body.encode() if isinstance(body, str) else body
                processed = await self._dead_letter(raw, None, exc.reason, str(exc), attempt or 1)
                telemetry.current().count_unreadable(exc.reason)
                return processed
        if attempt is not None and attempt != envelope.attempt:
            envelope = envelope.model_copy(update={"attempt": attempt})
        tel = telemetry.current()
        tel.refresh()
        if not (tel.tracing or tel.measuring):
            return await self._run(envelope)
        quiet = tel.enter_quiet(envelope)
        if quiet is not None:  # a task not sampled, metrics off: only the task id for logs
            try:
                return await self._run(envelope)
            finally:
                telemetry.leave_quiet(quiet)
        scope = tel.processing(envelope)
        with scope:
            try:
                processed = await self._run(envelope)
            except Exception as exc:  # not even a dead letter could be recorded
                scope.outcome, scope.error = "error", f"{type(exc).__name__}: {exc}"
                raise
            scope.outcome = _OUTCOMES[processed.disposition]
            if processed.dead_letter is not None:
                scope.reason = processed.dead_letter.reason
            if processed.disposition in (Disposition.RETRY, Disposition.DEAD_LETTERED):
                scope.error = processed.error
        return processed

    async def process_many(self, envelopes: Sequence[Envelope]) -> list[Processed] | None:
        """Several envelopes for one agent as one step (`Step.run_many`: one load, one save),
        or None when they must go through `process` one by one: when there is telemetry to
        record for them (a task that is sampled has one span per message; metrics count
        each message), or when anything fails (a bad payload, a failing handler, a lost
        race): nothing was saved, and `process` retries and dead-letters each as usual (a
        handler that ran before the failure runs again). Envelopes of tasks not sampled
        are batched with tracing on too: they have no span to keep apart."""
        tel = telemetry.current()
        tel.refresh()
        quiet = tel.enter_quiet_many(envelopes)
        if quiet is None:
            return None
        try:
            results = await self.step.run_many(envelopes)
        except Exception as exc:  # ConcurrencyConflict, DeliveryError, a handler's error
            log.debug("%d envelopes go one by one: %s", len(envelopes), exc)
            return None
        finally:
            telemetry.leave_quiet(quiet)
        return [_stepped(e, r) for e, r in zip(envelopes, results, strict=True)]

    async def _run(self, envelope: Envelope) -> Processed:
        """The step, redone after lost races; failures become retries or dead letters."""
        for _ in range(self.conflict_retries):
            try:
                result = await self.step(envelope)
            except ConcurrencyConflict:
                await asyncio.sleep(0)  # let the winner finish; then reload and redo
                continue
            except DeliveryError as exc:
                return await self._dead_letter(
                    envelope.to_bytes(), envelope, exc.reason, str(exc), envelope.attempt
                )
            except Exception as exc:
                return await self._failed(envelope, exc)
            return _stepped(envelope, result)
        log.warning(
            "envelope %s lost %d races in a row; retrying later", envelope.id, self.conflict_retries
        )
        return Processed(
            Disposition.RETRY,
            envelope,
            retry_after=self.policy.delay(envelope.attempt),
            error="concurrency conflicts",
        )

    async def _failed(self, envelope: Envelope, exc: Exception) -> Processed:
        summary = f"{type(exc).__name__}: {exc}"
        if envelope.attempt >= self.policy.max_attempts:
            detail = f"handler failed {envelope.attempt} time(s); last error: {summary}"
            tb = "".join(traceback.format_exception(exc))[-4000:]
            return await self._dead_letter(
                envelope.to_bytes(), envelope, "handler_failed", detail, envelope.attempt, tb
            )
        delay = self.policy.delay(envelope.attempt)
        log.warning(
            "handler for %s at %s failed (attempt %d of %d), retrying in %.2fs: %s",
            envelope.message,
            envelope.recipient,
            envelope.attempt,
            self.policy.max_attempts,
            delay,
            summary,
        )
        return Processed(Disposition.RETRY, envelope, retry_after=delay, error=summary)

    async def _dead_letter(
        self,
        body: bytes,
        envelope: Envelope | None,
        reason: str,
        detail: str,
        attempts: int,
        tb: str | None = None,
    ) -> Processed:
        letter = DeadLetter(
            id=envelope.id if envelope else hashlib.blake2b(body, digest_size=16).hexdigest(),
            body=body,
            reason=reason,
            detail=detail,
            failed_at=utcnow(),
            attempts=attempts,
            agent=envelope.recipient if envelope else None,
            message=envelope.message if envelope else None,
            task_id=envelope.task_id if envelope else None,
            extra={"traceback": tb} if tb else {},
        )
        await self.store.add_dead_letter(letter)
        log.warning("dead-lettered %s (%s): %s", letter.id, reason, detail)
        if envelope is not None:
            await self._notify_sender(envelope, letter)
        return Processed(Disposition.DEAD_LETTERED, envelope, dead_letter=letter, error=detail)

    async def _notify_sender(self, envelope: Envelope, letter: DeadLetter) -> None:
        """Tell the sending agent (if its type handles `DeliveryFailed`) that its message
        was dead-lettered. Sent after the dead letter is recorded and before the delivery
        is settled, so a crash in between re-sends it (same id: receivers drop the copy)."""
        sender = envelope.sender_id
        if sender is None or envelope.message == _FAILED or sender == envelope.recipient_id:
            return
        from .messages import DeliveryFailed

        try:
            cls = self.step.registry.get(sender.type).cls
            cls.handler_for(DeliveryFailed)
        except Exception:  # an unknown type, or no handler: nobody to tell
            return
        notice = DeliveryFailed(
            envelope_id=envelope.id,
            message=envelope.message,
            recipient=envelope.recipient,
            reason=letter.reason,
            detail=letter.detail[:2000],
        )
        await self.step.transport.send(
            [
                Envelope(
                    id=hashlib.blake2b(
                        f"{envelope.id}:failed".encode(), digest_size=16
                    ).hexdigest(),
                    message=DeliveryFailed.message_name,
                    version=DeliveryFailed.message_version,
                    payload=notice.model_dump(mode="json"),
                    task_id=envelope.task_id,
                    recipient=str(sender),
                    sender=envelope.recipient,
                    causation_id=envelope.id,
                    # the failed envelope's time, not now: a second dead-lettering of the
                    # same envelope sends the same notice (same id and time), dropped by
                    # the sender as a duplicate however late it comes
                    created_at=envelope.created_at,
                    traceparent=envelope.traceparent,
                )
            ]
        )
