"""The embedded default store: one SQLite file in WAL mode that survives restarts.

It also keeps the local runtime's queue of pending envelopes and timers (`SQLiteJournal`)
in the same file, so a stopped runtime restarts with nothing lost.

Calls run on the event loop's thread: a point read or a one-row write on a local WAL file
takes microseconds, far less than handing it to a thread would.

Group commit: writes go into one open transaction that is committed every
`commit_interval` seconds (default 20 ms), every `commit_batch` writes, and whenever
`flush()` is called (the local runtime flushes when it accepts a message from outside and
when it goes idle). Because the queue and the agents' state live in the same file and the
same transaction, a process killed at any moment comes back at a consistent point: the
envelopes whose effects were rolled back are back in the queue and are handled again, so
nothing is lost and nothing is doubled. ``commit_interval=0`` commits every write at once.
``synchronous=NORMAL`` survives process crashes; a power cut can lose the last commits (never
corrupt the file); ``durable=True`` selects ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from ..envelope import Envelope, utcnow
from ..errors import ConcurrencyConflict, EnvelopeInvalid, NotFound, StoreError
from ..ids import AgentId
from .base import AgentRecord, DeadLetter

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
CREATE TABLE IF NOT EXISTS queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
"""


def _outbox_text(outbox: tuple[Envelope, ...]) -> str | None:
    if not outbox:
        return None
    return "[" + ",".join(e.model_dump_json(exclude_none=True) for e in outbox) + "]"


class SQLiteStore:
    """State store on one SQLite file (created with its folder when missing)."""

    def __init__(
        self,
        path: str | Path,
        *,
        durable: bool = False,
        commit_interval: float = 0.02,
        commit_batch: int = 1000,
    ) -> None:
        self.path = Path(path)
        self._writer = _GroupCommit(commit_interval, commit_batch)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store at {path}: {exc}") from exc
        self._writer.db = self._db
        self._write = self._writer.execute
        self._closed = False

    def journal(self) -> SQLiteJournal:
        """The durable queue for the local runtime, in the same file and transaction."""
        return SQLiteJournal(self._writer)

    def flush(self) -> None:
        """Commit every write made so far."""
        self._writer.flush()

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """Point read by agent id."""
        row = self._db.execute(
            "SELECT state, state_version, seen, outbox, version FROM agents WHERE id = ?",
            (str(agent_id),),
        ).fetchone()
        if row is None:
            return AgentRecord(agent_id)
        state, state_version, seen, outbox, version = row
        return AgentRecord(
            agent_id,
            state=state,
            state_version=state_version,
            seen=tuple(seen.split(" ")) if seen else (),
            outbox=tuple(Envelope.model_validate(e) for e in json.loads(outbox)) if outbox else (),
            etag=str(version),
        )

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Conditional write on the version column."""
        values = (
            record.state,
            record.state_version,
            " ".join(record.seen),  # envelope ids never contain spaces
            _outbox_text(record.outbox),
        )
        key = str(record.agent_id)
        try:
            if if_match is None:
                try:
                    self._write(
                        "INSERT INTO agents (state, state_version, seen, outbox, id, version) "
                        "VALUES (?, ?, ?, ?, ?, 1)",
                        (*values, key),
                    )
                except sqlite3.IntegrityError:
                    raise ConcurrencyConflict(
                        f"{key}: created by another step since it was read"
                    ) from None
                return "1"
            new_version = int(if_match) + 1
            cur = self._write(
                "UPDATE agents SET state = ?, state_version = ?, seen = ?, outbox = ?, "
                "version = ? WHERE id = ? AND version = ?",
                (*values, new_version, key, int(if_match)),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write of {key} failed: {exc}") from exc
        if cur.rowcount != 1:
            raise ConcurrencyConflict(f"{key}: changed by another step since version {if_match}")
        return str(new_version)

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the published outbox; the version stays, so no reader is invalidated."""
        self._write(
            "UPDATE agents SET outbox = NULL WHERE id = ? AND version = ? AND outbox IS NOT NULL",
            (str(agent_id), int(etag)),
        )

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it (idempotent by id)."""
        self._write(
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
        rows = self._db.execute(
            "SELECT * FROM dead_letters ORDER BY failed_at DESC, rowid DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_dead_letter(row) for row in rows]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter or `NotFound`."""
        row = self._db.execute("SELECT * FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
        if row is None:
            raise NotFound(f"no dead letter with id {letter_id!r}")
        return _dead_letter(row)

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove one or raise `NotFound`."""
        cur = self._write("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        if cur.rowcount != 1:
            raise NotFound(f"no dead letter with id {letter_id!r}")

    async def close(self) -> None:
        """Commit and close the file (closing twice is harmless)."""
        if self._closed:
            return
        self._closed = True
        self._writer.flush()
        self._db.close()


def _dead_letter(row: tuple[object, ...]) -> DeadLetter:
    id_, body, reason, detail, failed_at, attempts, agent, message, task_id, extra = row
    return DeadLetter(
        id=str(id_),
        body=bytes(body),  # type: ignore[call-overload]
        reason=str(reason),
        detail=str(detail),
        failed_at=datetime.fromisoformat(str(failed_at)),
        attempts=int(attempts),  # type: ignore[call-overload]
        agent=agent,  # type: ignore[arg-type]
        message=message,  # type: ignore[arg-type]
        task_id=task_id,  # type: ignore[arg-type]
        extra=json.loads(str(extra)),
    )


class _GroupCommit:
    """Runs writes inside one open transaction and commits it in batches (see module doc)."""

    def __init__(self, interval: float, batch: int) -> None:
        self.db: sqlite3.Connection
        self.interval = interval
        self.batch = batch
        self._writes = 0
        self._deletes: list[tuple[str]] = []
        self._timer: asyncio.TimerHandle | None = None

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run one write in the open transaction, opening it if needed."""
        if self.interval <= 0:
            return self.db.execute(sql, params)
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self._arm()
        cur = self.db.execute(sql, params)
        self._writes += 1
        if self._writes >= self.batch:
            self.flush()
        return cur

    def executemany(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """Run one statement for many rows atomically."""
        if self.interval <= 0:
            with self.db:
                self.db.executemany(sql, rows)
            return
        for row in rows:
            self.execute(sql, row)

    def delete_later(self, envelope_id: str) -> None:
        """Remove a handled envelope from the queue as part of the next commit.

        Nothing reads the queue between commits, and the whole batch commits or rolls back
        as one, so deferring the delete changes no outcome; it saves a statement per step.
        """
        if self.interval <= 0:
            self.db.execute("DELETE FROM queue WHERE id = ?", (envelope_id,))
            return
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
            self._arm()
        self._deletes.append((envelope_id,))

    def flush(self) -> None:
        """Commit the open transaction, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._deletes:
            self.db.executemany("DELETE FROM queue WHERE id = ?", self._deletes)
            self._deletes = []
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        self._writes = 0

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a CLI call): nothing would commit later
            self._timer = None
            return
        self._timer = loop.call_later(self.interval, self.flush)


class SQLiteJournal:
    """The local runtime's durable queue: envelopes waiting to be handled, in send order."""

    def __init__(self, writer: _GroupCommit) -> None:
        self._writer = writer
        self._db = writer.db

    def add(self, envelopes: Iterable[Envelope]) -> None:
        """Persist envelopes (ones already queued, by id, are kept once)."""
        rows: list[tuple[object, ...]] = [
            (e.id, e.model_dump_json(exclude_none=True)) for e in envelopes
        ]
        self._writer.executemany("INSERT OR IGNORE INTO queue (id, body) VALUES (?, ?)", rows)

    def update(self, envelope: Envelope) -> None:
        """Rewrite a queued envelope (a retry: new attempt and due time), keeping its place."""
        self._writer.execute(
            "UPDATE queue SET body = ? WHERE id = ?",
            (envelope.model_dump_json(exclude_none=True), envelope.id),
        )

    def remove(self, envelope_id: str) -> None:
        """Forget a handled envelope (at the next commit)."""
        self._writer.delete_later(envelope_id)

    def flush(self) -> None:
        """Make everything queued so far durable."""
        self._writer.flush()

    def pending(self) -> list[Envelope]:
        """Every queued envelope, oldest first.

        A row that no longer parses (written by an incompatible version) is moved to the
        dead letters rather than blocking the start or being dropped.
        """
        envelopes = []
        rows = self._db.execute("SELECT id, body FROM queue ORDER BY seq").fetchall()
        for envelope_id, body in rows:
            try:
                envelopes.append(Envelope.from_bytes(body))
            except EnvelopeInvalid as exc:
                self._writer.execute(
                    "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, 1, NULL, NULL, "
                    "NULL, '{}')",
                    (envelope_id, body.encode(), exc.reason, str(exc), utcnow().isoformat()),
                )
                self.remove(envelope_id)
        self._writer.flush()
        return envelopes
