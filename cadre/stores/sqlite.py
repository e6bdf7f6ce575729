"""The embedded default store: one SQLite file in WAL mode that survives restarts.

It also keeps the local runtime's queue of pending envelopes and timers (`SQLiteJournal`)
in the same file, so a stopped runtime restarts with nothing lost.

One runtime owns a file at a time (an exclusive lock on ``<file>.lock``, released when the
store closes or the process dies); other processes may open it ``readonly=True`` to look
(`cadre dlq list`). Because it is the only writer, the store keeps the records it has
read or written in memory (a bounded LRU): a load is a dict look-up, and the conditional
write is checked against the record it holds.

Group commit (`cadre.stores._sqlite_writer`): writes reach the file in one transaction
every `commit_interval` seconds (default 20 ms), every `commit_batch` writes, and whenever
`flush()` is called (the local runtime flushes when it accepts a message from outside and
when it goes idle). The queue and the agents' state commit together, so a process killed
at any moment comes back at a consistent point: the envelopes whose effects were lost are
back in the queue and are handled again; nothing is lost and nothing is doubled.
``commit_interval=0`` commits every write at once. Agents' logs (a team's transcript) are
rows of the ``log`` table keyed by (stream, seq), written in the commit that writes the
record they came with. ``synchronous=NORMAL`` survives process
crashes; a power cut can lose the last commits (never corrupt the file); ``durable=True``
selects ``synchronous=FULL``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import weakref
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

from ..envelope import Envelope
from ..errors import ConcurrencyConflict, NotFound, StoreError
from ..ids import AgentId
from ._sqlite_writer import GroupCommit, SQLiteJournal
from .base import (
    AgentRecord,
    DeadLetter,
    LogEntry,
    evicted_needle,
    evicted_text,
    outbox_json,
    refuse_surrogates,
    seen_ids,
    seen_text,
    storable_letter,
)

__all__ = ["SQLiteJournal", "SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    state TEXT,
    state_version INTEGER NOT NULL,
    seen TEXT NOT NULL,
    outbox TEXT,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    failed_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    agent TEXT,
    message TEXT,
    task_id TEXT,
    extra TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS log (
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evicted_ids (
    agent TEXT NOT NULL,
    first TEXT NOT NULL,
    ids TEXT NOT NULL,
    PRIMARY KEY (agent, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


class SQLiteStore:
    """State store on one SQLite file (created with its folder when missing)."""

    max_item_bytes: int | None = None
    """SQLite's own limit (1 GB a value) is far beyond what a step could write."""

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = False,
        commit_interval: float = 0.02,
        commit_batch: int = 1000,
        cache_size: int = 10_000,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        in_memory = str(path) == ":memory:"
        if not in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = None if readonly or in_memory else _OwnerLock(self.path)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            if not readonly:
                self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            self._release()
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc
        self._records: OrderedDict[str, AgentRecord] = OrderedDict()  # least recent first
        self._dirty: dict[str, AgentRecord] = {}
        self._log: dict[tuple[str, int], str] = {}  # entries to write at the next commit
        self._evicted: dict[tuple[str, str], str] = {}  # one row per save, for the next commit
        self._json: dict[str, str] = {}  # saved envelopes as JSON, until the next commit
        self._cache_size = max(cache_size, 1)
        self._writer = GroupCommit(
            self._db, commit_interval, commit_batch, self._write_back, self._forget
        )
        self._closed = False

    def journal(self) -> SQLiteJournal:
        """The durable queue for the local runtime, in the same file and transaction."""
        self._check_writable()
        return SQLiteJournal(self._writer, self._json)

    def flush(self) -> None:
        """Commit every write made so far."""
        if not self.readonly:
            self._writer.flush()

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """The record this store holds, else a point read by agent id."""
        key = str(agent_id)
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
            return record
        record = self._read(agent_id, key)
        if not self.readonly:
            self._remember(key, record)
        return record

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Conditional write on the version; reaches the file at the next commit."""
        self._check_writable()
        # the write-back, at the next commit, would fail on a lone surrogate; the envelopes'
        # JSON is kept for the journal, which queues the same envelopes right after
        for envelope, text in zip(record.outbox, refuse_surrogates(record), strict=True):
            self._json[envelope.id] = text
        key = str(record.agent_id)
        current = self._records.get(key) or self._read(record.agent_id, key)
        if current.etag != if_match:
            raise ConcurrencyConflict(
                f"{key}: stored version {current.etag}, write expected {if_match}"
            )
        etag = str(int(if_match) + 1) if if_match is not None else "1"
        saved = record.with_etag(etag)
        self._remember(key, saved)
        self._dirty[key] = saved
        for entry in record.log:
            self._log.setdefault((entry.stream, entry.seq), entry.data)
        if record.evicted:
            self._evicted[key, record.evicted[0]] = evicted_text(record.evicted)
        self._writer.wrote()
        return etag

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the published outbox; the version stays, so no reader is invalidated."""
        self._check_writable()
        key = str(agent_id)
        current = self._records.get(key) or self._read(agent_id, key)
        if current.etag != etag or not current.outbox:
            return
        cleared = AgentRecord(
            agent_id, current.state, current.state_version, current.seen, (), etag
        )
        self._remember(key, cleared)
        self._dirty[key] = cleared
        self._writer.wrote()

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """The committed rows (one index range scan), then the entries of the next commit."""
        start, limit = max(start, 0), max(limit, 0)
        rows = self._query(
            "SELECT seq, data FROM log WHERE stream = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (stream, start, limit),
        )
        entries = [LogEntry(stream, seq, data) for seq, data in rows]
        if len(entries) < limit and self._log:
            after = entries[-1].seq + 1 if entries else start
            pending = sorted(
                (LogEntry(s, seq, data) for (s, seq), data in self._log.items()
                 if s == stream and seq >= after),
                key=lambda e: e.seq,
            )  # fmt: skip
            entries += pending[: limit - len(entries)]
        return entries

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """The rows of the next commit, then the agent's rows (one per evicting save: a
        range of the primary key)."""
        key, needle = str(agent_id), evicted_needle(envelope_id)
        if any(a == key and needle in ids for (a, _), ids in self._evicted.items()):
            return True
        rows = self._query(
            "SELECT 1 FROM evicted_ids WHERE agent = ? AND instr(ids, ?) > 0 LIMIT 1",
            (key, needle),
        )
        return bool(rows)

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it (idempotent by id)."""
        self._check_writable()
        letter = storable_letter(letter)
        self._writer.execute(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                letter.id,
                letter.body,
                letter.reason,
                letter.detail,
                letter.failed_at.isoformat(),
                letter.attempts,
                letter.agent,
                letter.message,
                letter.task_id,
                json.dumps(letter.extra),
            ),
        )

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        rows = self._query(
            "SELECT * FROM dead_letters ORDER BY failed_at DESC, rowid DESC LIMIT ?", (limit,)
        )
        return [_dead_letter(row) for row in rows]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter or `NotFound`."""
        rows = self._query("SELECT * FROM dead_letters WHERE id = ?", (letter_id,))
        if not rows:
            raise NotFound(f"no dead letter with id {letter_id!r}")
        return _dead_letter(rows[0])

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove one or raise `NotFound`."""
        self._check_writable()
        cur = self._writer.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        if cur.rowcount != 1:
            raise NotFound(f"no dead letter with id {letter_id!r}")

    async def close(self) -> None:
        """Commit and close the file, and give up ownership (closing twice is harmless)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._db.close()
            self._release()

    # -- internals -------------------------------------------------------------------

    def _read(self, agent_id: AgentId, key: str) -> AgentRecord:
        rows = self._query(
            "SELECT state, state_version, seen, outbox, version FROM agents WHERE id = ?", (key,)
        )
        if not rows:
            return AgentRecord(agent_id)
        state, state_version, seen, outbox, version = rows[0]
        return AgentRecord(
            agent_id,
            state=state,
            state_version=state_version,
            seen=seen_ids(seen),
            outbox=tuple(Envelope.model_validate(e) for e in json.loads(outbox)) if outbox else (),
            etag=str(version),
        )

    def _query(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if self.readonly and "no such table" in str(exc):
                return []  # a file no runtime has written yet
            raise StoreError(f"SQLite read from {self.path} failed: {exc}") from exc

    def _remember(self, key: str, record: AgentRecord) -> None:
        self._records[key] = record
        self._records.move_to_end(key)
        if len(self._records) > self._cache_size:
            if self._dirty:
                self._writer.flush()  # only clean records may be forgotten
            while len(self._records) > self._cache_size:
                self._records.popitem(last=False)

    def _write_back(self) -> None:
        """Write the records, log entries and evicted ids since the last commit (inside the
        commit)."""
        self._json.clear()
        if self._log:
            self._db.executemany(
                "INSERT OR IGNORE INTO log (stream, seq, data) VALUES (?, ?, ?)",
                [(stream, seq, data) for (stream, seq), data in self._log.items()],
            )
            self._log = {}
        if self._evicted:
            self._db.executemany(
                "INSERT OR IGNORE INTO evicted_ids (agent, first, ids) VALUES (?, ?, ?)",
                [(agent, first, ids) for (agent, first), ids in self._evicted.items()],
            )
            self._evicted = {}
        if not self._dirty:
            return
        self._db.executemany(
            "INSERT INTO agents (id, state, state_version, seen, outbox, version) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
            "state_version = excluded.state_version, seen = excluded.seen, "
            "outbox = excluded.outbox, version = excluded.version",
            [
                (
                    key,
                    r.state,
                    r.state_version,
                    seen_text(r.seen),
                    outbox_json(r.outbox) if r.outbox else None,
                    int(r.etag),  # type: ignore[arg-type]
                )
                for key, r in self._dirty.items()
            ],
        )
        self._dirty = {}

    def _forget(self) -> None:
        """A commit failed: what this store holds may be ahead of the file; drop it."""
        self._records.clear()
        self._dirty, self._log, self._evicted = {}, {}, {}

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the store on {self.path} was opened read-only")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class _OwnerLock:
    """An exclusive advisory lock on ``<file>.lock``: one runtime writes a state file.

    The kernel drops it when the process dies (even by kill -9), so a crash never leaves
    a stale lock; the file only says who holds it, for the error message.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(f"{path}.lock")
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform (Windows): not enforced
            self._fd: int | None = None
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(
                f"the state file {path} is in use by another Cadre runtime ({owner}); stop "
                "it first, or choose another file with --state / CADRE_STATE"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        """Give the lock up (closing the descriptor drops it)."""
        if self._fd is not None:
            self._finalizer()
            self._fd = None


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    id_, body, reason, detail, failed_at, attempts, agent, message, task_id, extra = row
    return DeadLetter(
        id=str(id_),
        body=bytes(body),
        reason=str(reason),
        detail=str(detail),
        failed_at=datetime.fromisoformat(str(failed_at)),
        attempts=int(attempts),
        agent=agent,
        message=message,
        task_id=task_id,
        extra=json.loads(str(extra)),
    )
