"""What a handler can do: send, publish, reply and schedule — all collected, none awaited."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import telemetry
from .envelope import Envelope, derive_id, utcnow
from .errors import NoReplyTarget
from .ids import AgentId, TopicId
from .stores.base import LogEntry

if TYPE_CHECKING:
    from .messages import Message
    from .registry import Registry

_log = logging.getLogger("cadre.agent")


class AgentLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose records carry the agent id, task id and envelope id."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


class Context:
    """The handler's view of the world for one step.

    Every outgoing message becomes an envelope in `outbox`, with an id derived from the
    incoming envelope's id, so re-running the step produces the same ids. Nothing leaves
    until the step has stored the agent's new state. Entries for the agent's append-only
    log (`append_log`) are stored with that state, in the same step.
    """

    __slots__ = (
        "_logger",
        "_now",
        "_registry",
        "agent_id",
        "envelope",
        "log",
        "max_item_bytes",
        "outbox",
    )

    def __init__(
        self,
        envelope: Envelope,
        agent_id: AgentId,
        registry: Registry,
        *,
        max_item_bytes: int | None = None,
    ) -> None:
        self.envelope = envelope
        self.agent_id = agent_id
        self.outbox: list[Envelope] = []
        self.log: list[LogEntry] = []
        self.max_item_bytes = max_item_bytes
        """The store's largest record or log entry in bytes (None: no practical limit)."""
        self._registry = registry
        self._now: datetime | None = None
        self._logger: AgentLogger | None = None

    @property
    def task_id(self) -> str:
        """The task (correlation) id shared by every message of one task."""
        return self.envelope.task_id

    @property
    def now(self) -> datetime:
        """The time this step started handling the message (UTC), fixed for the step."""
        if self._now is None:
            self._now = utcnow()
        return self._now

    @property
    def logger(self) -> AgentLogger:
        """A logger that tags records with ``agent_id``, ``task_id`` and ``envelope_id``."""
        if self._logger is None:
            self._logger = AgentLogger(
                _log,
                {
                    "agent_id": str(self.agent_id),
                    "task_id": self.task_id,
                    "envelope_id": self.envelope.id,
                },
            )
        return self._logger

    def append_log(self, seq: int, data: str) -> None:
        """Append entry number `seq` (JSON text) to this agent's log, stored with this step.

        The agent numbers its entries itself, from 0 with no gaps, and keeps the next number
        in its state, so a step that is run again writes the same numbers."""
        self.log.append(LogEntry(str(self.agent_id), seq, data))

    def send(self, to: AgentId, message: Message, *, reply_to: AgentId | None = None) -> str:
        """Send `message` to agent `to`; returns the new envelope's id."""
        return self._add(message, [str(to)], reply_to=reply_to)[0]

    def publish(self, topic: TopicId, message: Message) -> list[str]:
        """Publish to every agent subscribed to `topic` (except this one); returns the ids."""
        me = str(self.agent_id)
        targets = [t for t in self._registry.recipient_addresses(topic) if t != me]
        return self._add(message, targets, topic=str(topic))

    def reply(self, message: Message) -> str:
        """Send `message` to the incoming envelope's `reply_to`, or else its sender."""
        target = self.envelope.reply_to or self.envelope.sender
        if target is None:
            raise NoReplyTarget(
                f"cannot reply to envelope {self.envelope.id}: it has no sender or reply_to; "
                "send it with reply_to=, or from a runtime that sets one (its task inbox)"
            )
        return self._add(message, [target])[0]

    def schedule(
        self,
        message: Message,
        *,
        to: AgentId | None = None,
        after: timedelta | None = None,
        at: datetime | None = None,
    ) -> str:
        """A durable timer: deliver `message` to `to` (default: this agent) later.

        Give exactly one of `after` (a delay) or `at` (an aware datetime).
        """
        if (after is None) == (at is None):
            raise ValueError("schedule() needs exactly one of after= or at=")
        if at is not None and at.tzinfo is None:
            raise ValueError("schedule(at=...) needs a timezone-aware datetime")
        due = at if at is not None else self.now + after  # type: ignore[operator]
        return self._add(message, [str(to or self.agent_id)], not_before=due)[0]

    def _add(
        self,
        message: Message,
        recipients: list[str],
        *,
        reply_to: AgentId | None = None,
        topic: str | None = None,
        not_before: datetime | None = None,
    ) -> list[str]:
        if not message.message_name:
            raise TypeError(f"{type(message).__qualname__} is abstract and cannot be sent")
        if not recipients:
            return []
        incoming = self.envelope
        payload = message.model_dump(mode="json")
        # One producer span per send or topic publish; its context rides in every envelope.
        traceparent = telemetry.current().producer_traceparent(
            "publish" if topic else "send",
            message.message_name,
            topic or recipients[0],
            task_id=incoming.task_id,
            envelope_id=derive_id(incoming.id, len(self.outbox)),
            payload=payload,
        )
        ids = []
        for recipient in recipients:
            env = Envelope.trusted(
                id=derive_id(incoming.id, len(self.outbox)),
                message=message.message_name,
                version=message.message_version,
                payload=payload,
                task_id=incoming.task_id,
                recipient=recipient,
                topic=topic,
                sender=str(self.agent_id),
                reply_to=str(reply_to) if reply_to else None,
                causation_id=incoming.id,
                created_at=self.now,
                not_before=not_before,
                attempt=1,
                traceparent=traceparent or incoming.traceparent,
            )
            self.outbox.append(env)
            ids.append(env.id)
        return ids
