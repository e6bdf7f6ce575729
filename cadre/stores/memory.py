"""An in-memory state store: the fastest adapter, for tests, benchmarks and throwaway runs."""

from __future__ import annotations

import itertools

from ..errors import ConcurrencyConflict, NotFound
from ..ids import AgentId
from .base import AgentRecord, DeadLetter, LogEntry


class MemoryStore:
    """Keeps records in a dict; nothing survives the process.

    Records are immutable values (state is JSON text), so what is stored can never be
    changed behind the store's back. A log is a list per stream, indexed by `seq`.
    """

    max_item_bytes: int | None = None

    def __init__(self) -> None:
        self._records: dict[AgentId, AgentRecord] = {}
        self._logs: dict[str, list[LogEntry]] = {}
        self._evicted: dict[AgentId, set[str]] = {}
        self._dead: dict[str, DeadLetter] = {}
        self._versions = itertools.count(1)

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """The stored record, or an empty one."""
        return self._records.get(agent_id) or AgentRecord(agent_id)

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Conditional write on the etag."""
        current = self._records.get(record.agent_id)
        current_etag = current.etag if current else None
        if current_etag != if_match:
            raise ConcurrencyConflict(
                f"{record.agent_id}: stored version {current_etag}, write expected {if_match}"
            )
        ends: dict[str, int] = {}  # checked before anything changes: no gap in a log
        for entry in record.log:
            end = ends.get(entry.stream, len(self._logs.get(entry.stream, ())))
            if entry.seq > end:
                raise ValueError(f"log {entry.stream}: entry {entry.seq} after {end - 1}")
            ends[entry.stream] = max(end, entry.seq + 1)
        etag = str(next(self._versions))
        self._records[record.agent_id] = record.with_etag(etag)
        for entry in record.log:
            log = self._logs.setdefault(entry.stream, [])
            if entry.seq == len(log):
                log.append(entry)
        if record.evicted:
            self._evicted.setdefault(record.agent_id, set()).update(record.evicted)
        return etag

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the outbox if the record is still the one written with `etag`."""
        current = self._records.get(agent_id)
        if current is not None and current.etag == etag and current.outbox:
            self._records[agent_id] = current.with_outbox(())

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """A slice of the stream's list."""
        return self._logs.get(stream, [])[max(start, 0) : max(start, 0) + max(limit, 0)]

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """A set lookup."""
        return envelope_id in self._evicted.get(agent_id, ())

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it (idempotent by id)."""
        self._dead.setdefault(letter.id, letter)

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        letters = sorted(self._dead.values(), key=lambda d: d.failed_at, reverse=True)
        return letters[:limit]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter or `NotFound`."""
        try:
            return self._dead[letter_id]
        except KeyError:
            raise NotFound(f"no dead letter with id {letter_id!r}") from None

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove one or raise `NotFound`."""
        if self._dead.pop(letter_id, None) is None:
            raise NotFound(f"no dead letter with id {letter_id!r}")

    async def close(self) -> None:
        """Nothing to release."""
