"""The client side every host shares: messages sent from outside any agent, redrives and
health checks, over a host's store and transport (see `cadre.runtime` for the seam).

`Client` implements `cadre.runtime.Runtime` for any host that has a ``store``, a
``transport`` and a ``registry``: `LocalRuntime`, `FunctionsRuntime` and `WorkersRuntime`
derive from it and add only what differs (the local runtime runs what it sends, the workers'
runtime connects to its broker, each host describes its transport's health). The worker's
``submit`` uses `send_from_client`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from .. import telemetry
from ..envelope import Envelope, new_id, utcnow
from ..errors import EnvelopeInvalid
from ..ids import AgentId, TopicId
from ..messages import Message
from ..registry import INBOX_TYPE, Registry
from ..runtime import Checks
from ..stores.base import DeadLetter, StateStore
from ..transports.base import Transport


def client_envelopes(
    message: Message,
    recipients: list[str],
    *,
    task_id: str | None = None,
    topic: str | None = None,
    reply_to: AgentId | None = None,
) -> list[Envelope]:
    """Envelopes for a message sent from outside any agent (a client, the HTTP API), one per
    recipient, in a new task unless `task_id` is given, with the producer span's
    traceparent (so the task is one trace from here). Replies go to `reply_to`, or else to
    the task's inbox. Every host's ``send`` builds its envelopes here."""
    if not message.message_name:
        raise TypeError(f"{type(message).__qualname__} is abstract and cannot be sent")
    if not recipients:
        return []
    payload = message.model_dump(mode="json")
    task = task_id or new_id()
    # One random id per call; each recipient's envelope id is its first 96 bits and the
    # recipient's index (a fan-out to many subscribers costs one random draw, not one each).
    base = new_id()[:24]
    ids = [f"{base}{index:08x}" for index in range(len(recipients))]
    first_id = ids[0]
    traceparent = telemetry.current().producer_traceparent(
        "publish" if topic else "send",
        message.message_name,
        topic or recipients[0],
        task_id=task,
        envelope_id=first_id,
        payload=payload,
    )
    shared = {
        "message": message.message_name,
        "version": message.message_version,
        "payload": payload,
        "task_id": task,
        "topic": topic,
        "reply_to": str(reply_to) if reply_to else f"{INBOX_TYPE}/{task}",
        "created_at": utcnow(),
        "causation_id": None,
        "sender": None,
        "not_before": None,
        "attempt": 1,
        "traceparent": traceparent,
    }
    # Built from validated parts: skip re-validating what this process just made.
    envelopes = []
    for envelope_id, recipient in zip(ids, recipients, strict=True):
        fields = shared.copy()
        fields["id"], fields["recipient"] = envelope_id, recipient
        envelopes.append(Envelope.trusted_fields(fields))
    return envelopes


async def send_from_client(
    transport: Transport,
    to: AgentId,
    message: Message,
    *,
    task_id: str | None = None,
    reply_to: AgentId | None = None,
) -> Envelope:
    """Send one message from outside any agent (`client_envelopes`) and return its envelope:
    every host's ``send`` and the workers' `submit`."""
    [envelope] = client_envelopes(message, [str(to)], task_id=task_id, reply_to=reply_to)
    await transport.send([envelope])
    return envelope


def redrive_envelope(letter: DeadLetter) -> Envelope:
    """The envelope to send again for a dead letter: same id and content, attempt 1;
    `EnvelopeInvalid` when its bytes are not an envelope (nothing to send again)."""
    try:
        envelope = Envelope.from_bytes(letter.body)
    except RecursionError:
        raise EnvelopeInvalid(f"dead letter {letter.id}: its JSON is nested too deeply") from None
    return envelope.model_copy(update={"attempt": 1, "not_before": None})


async def redrive_letter(store: StateStore, transport: Transport, letter_id: str) -> Envelope:
    """Send a dead letter's envelope again (attempt 1), then remove the dead letter
    (`NotFound` when there is none). Every host's ``redrive``."""
    letter = await store.get_dead_letter(letter_id)
    envelope = redrive_envelope(letter)
    await transport.send([envelope])
    await store.delete_dead_letter(letter_id)
    return envelope


HEALTH_PROBE = AgentId(INBOX_TYPE, "health-probe")
"""The record a health check reads: one that never exists (a point read, never a scan)."""


async def store_check(store: StateStore) -> dict[str, Any]:
    """A health check of a store: a point read of a record that never exists. Reports a
    failure rather than raising it (a health check must answer)."""
    try:
        await store.load(HEALTH_PROBE)
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "detail": f"{type(store).__name__} answered a read"}


class Client:
    """The client side of a runtime (`cadre.runtime.Runtime`) over ``store``,
    ``transport`` and ``registry``, which the host sets in its constructor.

    A host overrides `start` (connect), `close` (stop first), `_sent` (called after each
    send, publish and redrive: the local runtime wakes its consumers there) and
    `transport_check` (what its transport's health is)."""

    store: StateStore
    transport: Transport
    registry: Registry

    async def send(
        self,
        to: AgentId,
        message: Message,
        *,
        task_id: str | None = None,
        reply_to: AgentId | None = None,
    ) -> Envelope:
        """Send a message from outside any agent; starts a new task unless `task_id` is
        given. Replies go to `reply_to`, or else to the task's inbox."""
        envelope = await send_from_client(
            self.transport, to, message, task_id=task_id, reply_to=reply_to
        )
        self._sent()
        return envelope

    async def publish(
        self, topic: TopicId, message: Message, *, task_id: str | None = None
    ) -> list[Envelope]:
        """Publish from outside any agent to every subscriber of `topic` (as this
        process's registry knows them)."""
        envelopes = client_envelopes(
            message, self.registry.recipient_addresses(topic), task_id=task_id, topic=str(topic)
        )
        await self.transport.send(envelopes)
        self._sent()
        return envelopes

    async def redrive(self, letter_id: str) -> Envelope:
        """Send a dead letter's envelope again (attempt 1) and remove it from the dead
        letters (`NotFound` when there is none)."""
        envelope = await redrive_letter(self.store, self.transport, letter_id)
        self._sent()
        return envelope

    async def health(self) -> Checks:
        """The checks ``GET /api/health`` reports: the store answers a point read, and
        the transport's own check (`transport_check`)."""
        return {"store": await store_check(self.store), "transport": self.transport_check()}

    def transport_check(self) -> dict[str, Any]:
        """The transport's health; by default only that it is configured (a probe would
        be a message)."""
        return {"ok": True, "detail": type(self.transport).__name__}

    def _sent(self) -> None:
        """Called after envelopes were handed to the transport."""

    async def start(self) -> None:
        """Nothing to do before the first send (a host that connects overrides this)."""

    async def close(self) -> None:
        """Release the transport and the store."""
        try:
            await self.transport.close()
        finally:
            await self.store.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
