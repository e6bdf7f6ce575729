"""Group commit for the SQLite store, and the local runtime's durable queue (the journal).

Writes collect in memory and reach the file in one transaction every `interval` seconds,
every `batch` writes, or when `flush()` is called. Nothing reads the file's agent rows or
queue rows between commits (the store answers loads from its own records), so deferring a
write changes no outcome; it lets a queue row that is added and removed between two
commits never touch the file, and many steps of one agent cost one row write.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Callable, Iterable

from ..envelope import Envelope, utcnow
from ..errors import EnvelopeInvalid, StoreError


class GroupCommit:
    """Batches writes into one transaction per commit (see the module docstring)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        interval: float,
        batch: int,
        before_commit: Callable[[], None],
        on_failure: Callable[[], None],
    ) -> None:
        self.db = db
        self.interval = interval
        self.batch = batch
        self._before_commit = before_commit
        self._on_failure = on_failure
        self._writes = 0
        self._inserts: dict[int, tuple[str, str]] = {}  # rows to add: seq -> (id, body)
        self._deletes: list[tuple[int]] = []  # queue rows to remove
        self._timer: asyncio.TimerHandle | None = None

    def wrote(self) -> None:
        """Count one deferred write; commit when the batch is full (or at once, interval 0)."""
        self._writes += 1
        if self.interval <= 0 or self._writes >= self.batch:
            self.flush()
        elif self._timer is None:
            self._arm()

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run one write now, inside the open transaction (opening it if needed)."""
        self._begin()
        try:
            cur = self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite write failed: {exc}") from exc
        self.wrote()
        return cur

    def queue_add(self, seq: int, envelope_id: str, body: str) -> None:
        """Queue an envelope row under its sequence number (its place in the queue)."""
        self._inserts[seq] = (envelope_id, body)
        self.wrote()

    def queue_update(self, seq: int, envelope_id: str, body: str) -> None:
        """Rewrite a queued envelope row in place (a retry keeps its place)."""
        if seq in self._inserts:
            self._inserts[seq] = (envelope_id, body)
            self.wrote()
        else:
            self.execute("UPDATE queue SET body = ? WHERE seq = ?", (body, seq))

    def queue_remove(self, seq: int) -> None:
        """Remove a handled envelope row; one added since the last commit never lands."""
        if self._inserts.pop(seq, None) is None:
            self._deletes.append((seq,))
        self.wrote()

    def flush(self) -> None:
        """Write everything deferred and commit, as one transaction."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._writes = 0
        try:
            self._begin()
            self._before_commit()
            if self._deletes:
                self.db.executemany("DELETE FROM queue WHERE seq = ?", self._deletes)
                self._deletes = []
            if self._inserts:
                self.db.executemany(
                    "INSERT INTO queue (seq, id, body) VALUES (?, ?, ?)",
                    [(seq, *row) for seq, row in self._inserts.items()],
                )
                self._inserts = {}
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._inserts, self._deletes = {}, []
            self._on_failure()
            raise StoreError(f"SQLite commit failed, the batch was rolled back: {exc}") from exc

    def _begin(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN")

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a CLI call): the next flush or close commits
            return
        self._timer = loop.call_later(self.interval, self.flush)


class SQLiteJournal:
    """The local runtime's durable queue: envelopes waiting to be handled, in send order.

    Rows are keyed by a sequence number this journal assigns (the queue order), so adding
    and removing one touches a single B-tree; the transport keeps ids unique.
    """

    def __init__(self, writer: GroupCommit, serialized: dict[str, str] | None = None) -> None:
        self._writer = writer
        # the envelopes' JSON the store made when it saved them (id -> text), used once here
        self._serialized = serialized if serialized is not None else {}
        self._seqs: dict[str, int] = {}
        last = writer.db.execute("SELECT max(seq) FROM queue").fetchone()[0]
        self._next = itertools.count((last or 0) + 1)

    def add(self, envelopes: Iterable[Envelope]) -> None:
        """Persist envelopes at the end of the queue (an id already queued is kept once)."""
        for e in envelopes:
            if e.id not in self._seqs:
                seq = self._seqs[e.id] = next(self._next)
                body = self._serialized.pop(e.id, None) or e.model_dump_json(exclude_none=True)
                self._writer.queue_add(seq, e.id, body)

    def update(self, envelope: Envelope) -> None:
        """Rewrite a queued envelope (a retry: new attempt and due time), keeping its place."""
        body = envelope.model_dump_json(exclude_none=True)
        self._writer.queue_update(self._seqs[envelope.id], envelope.id, body)

    def remove(self, envelope_id: str) -> None:
        """Forget a handled envelope (at the next commit)."""
        seq = self._seqs.pop(envelope_id, None)
        if seq is not None:
            self._writer.queue_remove(seq)

    def flush(self) -> None:
        """Make everything queued so far durable."""
        self._writer.flush()

    def pending(self) -> list[Envelope]:
        """Every queued envelope, oldest first.

        A row that no longer parses (written by an incompatible version) is moved to the
        dead letters rather than blocking the start or being dropped.
        """
        envelopes = []
        rows = self._writer.db.execute("SELECT seq, id, body FROM queue ORDER BY seq").fetchall()
        for seq, envelope_id, body in rows:
            try:
                envelope = Envelope.from_bytes(body)
            except EnvelopeInvalid as exc:
                self._writer.execute(
                    "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, 1, NULL, NULL, "
                    "NULL, '{}')",
                    (envelope_id, body.encode(), exc.reason, str(exc), utcnow().isoformat()),
                )
                self._writer.queue_remove(seq)
                continue
            if envelope.id in self._seqs:  # the same envelope queued twice: keep the first
                self._writer.queue_remove(seq)
                continue
            self._seqs[envelope.id] = seq
            envelopes.append(envelope)
        self._writer.flush()
        return envelopes
