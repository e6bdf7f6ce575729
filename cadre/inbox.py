"""The inbox: where replies to messages sent from outside any agent go.

A message sent by a client (the CLI, the HTTP API, a test) has no sender agent, so the
runtime addresses its replies to ``cadre.inbox/<task id>``: a built-in agent, present in
every registry, that keeps the most recent replies of one task in its state. Reading them
is a point read of that agent's state, in any host.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from .agent import Agent, handler
from .context import Context
from .messages import Message
from .registry import INBOX_TYPE

__all__ = ["INBOX_LIMIT", "INBOX_TYPE", "Inbox", "InboxState", "Reply"]

INBOX_LIMIT = 200
"""How many replies one task's inbox keeps (oldest dropped first)."""


class Reply(BaseModel):
    """One message that reached the inbox."""

    message: str
    version: int
    payload: dict[str, Any]
    sender: str | None
    envelope_id: str
    received_at: datetime


class InboxState(BaseModel):
    """The replies of one task, oldest first, and how many were dropped past the limit."""

    replies: list[Reply] = []
    dropped: int = 0


class Inbox(Agent):
    """Keeps every message it receives (any contract) in its state, up to `INBOX_LIMIT`."""

    State = InboxState

    @handler
    async def receive(self, msg: Message, ctx: Context) -> None:
        env = ctx.envelope
        self.state.replies.append(
            Reply(
                message=env.message,
                version=env.version,
                payload=env.payload,
                sender=env.sender,
                envelope_id=env.id,
                received_at=ctx.now,
            )
        )
        excess = len(self.state.replies) - INBOX_LIMIT
        if excess > 0:
            del self.state.replies[:excess]
            self.state.dropped += excess
