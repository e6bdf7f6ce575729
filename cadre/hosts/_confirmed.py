"""The step's views of the store and the broker in a worker: both go through `Confirms`
(see `cadre.hosts._confirms`), which keeps the bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..envelope import Envelope
from ..ids import AgentId
from ..stores.base import AgentRecord, DeadLetter, LogEntry

if TYPE_CHECKING:
    from ._confirms import Confirms


class ConfirmedStore:
    """The step's store (a `StateStore`): records go through `Confirms`, the rest straight
    to the store."""

    def __init__(self, confirms: Confirms) -> None:
        self._confirms = confirms
        self._inner = confirms.inner_store
        self.max_item_bytes = self._inner.max_item_bytes

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """See `Confirms.load`."""
        return await self._confirms.load(agent_id)

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """See `Confirms.save`."""
        return await self._confirms.save(record, if_match=if_match)

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """See `Confirms.clear_outbox`."""
        await self._confirms.clear_outbox(agent_id, etag)

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """The store's."""
        return await self._inner.read_log(stream, start, limit)

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """The store's."""
        return await self._inner.was_evicted(agent_id, envelope_id)

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """The store's."""
        await self._inner.add_dead_letter(letter)

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The store's."""
        return await self._inner.list_dead_letters(limit)

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """The store's."""
        return await self._inner.get_dead_letter(letter_id)

    async def delete_dead_letter(self, letter_id: str) -> None:
        """The store's."""
        await self._inner.delete_dead_letter(letter_id)

    async def close(self) -> None:
        """The store's."""
        await self._inner.close()


class ConfirmedTransport:
    """The step's transport: `send` returns once the publishes are started (`Confirms`)."""

    def __init__(self, confirms: Confirms) -> None:
        self._confirms = confirms

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """See `Confirms.publish`."""
        await self._confirms.publish(envelopes)

    async def close(self) -> None:
        """The broker's."""
        await self._confirms.inner_transport.close()
