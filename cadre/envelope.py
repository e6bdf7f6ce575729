"""The envelope: one message on the wire, with everything a host needs to route it,
deduplicate it, retry it and trace it. It round-trips through JSON bytes exactly."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import EnvelopeInvalid
from .ids import AgentId, TopicId


def new_id() -> str:
    """A fresh random envelope or task id (32 hex digits)."""
    return os.urandom(16).hex()


def derive_id(parent_id: str, index: int) -> str:
    """The id of the `index`-th message produced while handling envelope `parent_id`.

    Deterministic, so re-running or re-publishing a step's outbox yields the same ids and
    receivers can drop the duplicates.
    """
    return hashlib.blake2b(f"{parent_id}:{index}".encode(), digest_size=16).hexdigest()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """One message addressed to an agent (or a topic), as stored and transported.

    Agent and topic ids travel in their string forms (``type/key``); `recipient_id`,
    `sender_id`, `reply_to_id` and `topic_id` give them back as values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^\S{1,128}$")  # a broker message id: no spaces, <= 128
    message: str
    version: int
    payload: dict[str, Any]
    task_id: str
    recipient: str | None = None
    topic: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    causation_id: str | None = None
    created_at: datetime
    not_before: datetime | None = None
    attempt: int = 1
    traceparent: str | None = None

    @model_validator(mode="after")
    def _addressed(self) -> Envelope:
        if self.recipient is None and self.topic is None:
            raise ValueError("an envelope needs a recipient or a topic")
        if self.attempt < 1:
            raise ValueError("attempt starts at 1")
        for text, parse in (
            (self.recipient, AgentId.parse),
            (self.sender, AgentId.parse),
            (self.reply_to, AgentId.parse),
            (self.topic, TopicId.parse),
        ):
            if text is not None:
                parse(text)
        return self

    @property
    def recipient_id(self) -> AgentId | None:
        """The recipient as an `AgentId`."""
        return AgentId.parse(self.recipient) if self.recipient else None

    @property
    def sender_id(self) -> AgentId | None:
        """The sender as an `AgentId`, or None for messages from outside any agent."""
        return AgentId.parse(self.sender) if self.sender else None

    @property
    def reply_to_id(self) -> AgentId | None:
        """Where replies go: `reply_to` when set, else the sender."""
        text = self.reply_to or self.sender
        return AgentId.parse(text) if text else None

    @property
    def topic_id(self) -> TopicId | None:
        """The topic this envelope was published to, if any."""
        return TopicId.parse(self.topic) if self.topic else None

    @classmethod
    def trusted(cls, **fields: Any) -> Envelope:
        """Build an envelope from parts this process has already validated (every field
        given), skipping validation: the hot path of every step that sends something."""
        return cls.trusted_fields(fields)

    @classmethod
    def trusted_fields(cls, fields: dict[str, Any]) -> Envelope:
        """`trusted` from a dict that becomes the envelope's own (the caller gives it up):
        for building many envelopes from one template, ``dict(template, id=..., ...)``
        costs less than ``trusted(**template, id=...)``."""
        if fields.keys() != _ALL_FIELDS:
            raise TypeError(f"Envelope.trusted() needs exactly the fields {sorted(_ALL_FIELDS)}")
        envelope = _new(cls)
        _set_dict(envelope, fields)
        # Shared, never mutated: pydantic copies it before changing it (model_copy).
        _set_fields_set(envelope, _FIELDS_SET)
        _set_extra(envelope, None)
        _set_private(envelope, None)
        return envelope

    def to_bytes(self) -> bytes:
        """Serialise to JSON bytes; `from_bytes` gives back an equal envelope."""
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Envelope:
        """Parse JSON bytes; anything that is not an envelope raises `EnvelopeInvalid`."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise EnvelopeInvalid(f"not a valid envelope: {errors}") from exc


_ALL_FIELDS = frozenset(Envelope.model_fields)
_FIELDS_SET = set(_ALL_FIELDS)
# BaseModel's slot setters, looked up once (what object.__setattr__ would find every time).
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
