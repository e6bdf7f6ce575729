"""Wrappers that inject crashes into a real store or transport at one point of the step.

They do not change what the wrapped adapter does; they raise `Crash` where a process
would have died, so a test can redeliver the envelope and check nothing was lost or doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cadre.envelope import Envelope
from cadre.ids import AgentId
from cadre.stores.base import AgentRecord


class Crash(BaseException):
    """A simulated process death (BaseException: no handler or retry logic catches it)."""


class CrashingStore:
    """Crashes before or after the n-th save, or at clear_outbox."""

    def __init__(self, inner: Any, *, point: str) -> None:
        self.inner = inner
        self.point = point  # "before_save" | "after_save" | "before_clear"
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        if self.armed and self.point == "before_save":
            self.armed = False
            raise Crash("before save")
        etag = await self.inner.save(record, if_match=if_match)
        if self.armed and self.point == "after_save":
            self.armed = False
            raise Crash("after save, before publish")
        return str(etag)

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        if self.armed and self.point == "before_clear":
            self.armed = False
            raise Crash("after publish, before clearing the outbox")
        await self.inner.clear_outbox(agent_id, etag)


class RecordingTransport:
    """Keeps every envelope sent, in order (duplicates included), and forwards them."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.sent: list[Envelope] = []

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        self.sent.extend(envelopes)
        if self.inner is not None:
            await self.inner.send(envelopes)

    async def close(self) -> None:
        pass

    def unique_ids(self) -> list[str]:
        return list(dict.fromkeys(e.id for e in self.sent))
