"""Group commit for the PostgreSQL store: many agents' writes in one statement and one commit.

The saves that arrive while a commit is under way wait for the next one, which sends them
all in one statement (``unnest`` of array parameters in binary form: one round trip, one
parse, one WAL flush, and no JSON document for the server to take apart). A lone save is
not delayed: its commit starts at once. Each row's write stays conditional on its own
version, so batching changes no outcome: a stale write changes nothing and comes back as
a conflict while the others commit.

A batch of one plain save (a serial conversation's every step) is a plain conditional
``UPDATE``: it costs the server and the client about a third less than the batch statement.

Outbox clears are not waited for: they ride along with the next batch of several saves (or
go alone, without waiting for the disk, `clear_delay` seconds after they were asked for),
so in steady traffic they cost no commit of their own. A clear is dropped when a save of
the same agent comes first (the save writes the whole outbox, without what was cleared); a
dropped or lost clear only means the outbox is published again with the same ids, which
receivers drop.

The commits go over a connection of their own, kept open between batches: no pool to take
it from and no liveness query before each commit (a round trip that cost a serial
conversation about a fifth of its speed). A connection the server dropped while it was idle
(a restart, a failover) is found by the statement itself: it is replaced and the statement
sent once more. That is safe because every write is conditional on its version: a statement
that did commit before the break comes back as conflicts, and the steps read again and find
their envelopes handled.

If a batch fails as a whole (a bad value, a lost connection), its saves are retried one
by one, so one bad write fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..ids import AgentId
from .base import LogEntry, evicted_text

log = logging.getLogger("cadre.stores.postgres")

MAX_BATCH = 500
"""The most saves one commit carries."""

_SQL = """
WITH i AS (
    SELECT * FROM unnest(
        %b::int[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[], %b::int8[]
    ) AS i(n, t, k, state, sv, seen, outbox, ver)
), upd AS (
    UPDATE {p}agents AS a
    SET state = i.state::jsonb, state_version = i.sv, seen = i.seen, outbox = i.outbox,
        version = a.version + 1, updated_at = now()
    FROM i
    WHERE i.ver IS NOT NULL AND i.sv IS NOT NULL
        AND a.agent_type = i.t AND a.agent_key = i.k AND a.version = i.ver
    RETURNING i.n, a.version
), ins AS (
    INSERT INTO {p}agents (agent_type, agent_key, state, state_version, seen, outbox, version)
    SELECT i.t, i.k, i.state::jsonb, i.sv, i.seen, i.outbox, 1 FROM i WHERE i.ver IS NULL
    ON CONFLICT DO NOTHING
    RETURNING agent_type, agent_key, version
), clr AS (
    UPDATE {p}agents AS a SET outbox = '[]'
    FROM i
    WHERE i.sv IS NULL
        AND a.agent_type = i.t AND a.agent_key = i.k AND a.version = i.ver AND a.outbox <> '[]'
)
SELECT n, version, NULL, NULL FROM upd
UNION ALL SELECT NULL, version, agent_type, agent_key FROM ins
"""
"""One statement for a whole batch: one array per column (``sv`` null: a clear; ``ver``
null: an insert), sent in binary, so the server neither escapes nor parses anything but
the state (to jsonb); the seen ids and the outbox are text, written as they come."""

_ONE = """
UPDATE {p}agents
SET state = %s::jsonb, state_version = %s, seen = %s, outbox = %s,
    version = version + 1, updated_at = now()
WHERE agent_type = %s AND agent_key = %s AND version = %s
RETURNING version
"""
"""A batch of one save of an existing row, with no log entries, evicted ids or clears."""

_WRITTEN = """WHERE {a}.n IN (SELECT upd.n FROM upd)
        OR {a}.n IN (SELECT i.n FROM i JOIN ins ON ins.agent_type = i.t AND ins.agent_key = i.k)"""

_LOG_CTE = (
    """, lg AS (
    INSERT INTO {p}log (stream, seq, data)
    SELECT l.stream, l.seq, l.data
    FROM unnest(%b::int[], %b::text[], %b::int8[], %b::text[]) AS l(n, stream, seq, data)
    """
    + _WRITTEN.format(a="l")
    + """
    ON CONFLICT DO NOTHING
)"""
)

_EVICTED_CTE = (
    """, ev AS (
    INSERT INTO {p}evicted (agent, first, ids)
    SELECT e.agent, e.first, e.ids
    FROM unnest(%b::int[], %b::text[], %b::text[], %b::text[]) AS e(n, agent, first, ids)
    """
    + _WRITTEN.format(a="e")
    + """
    ON CONFLICT DO NOTHING
)"""
)


def statement(prefix: str, *, log: bool = False, evicted: bool = False) -> str:
    """`_SQL` for a batch whose saves carry log entries (a team manager's steps) and/or
    evicted ids (one step in `seen_limit // 4`): each entry's and each id's row is inserted
    only if its save's conditional write succeeded, in the same statement and so the same
    transaction."""
    extra = (_LOG_CTE if log else "") + (_EVICTED_CTE if evicted else "")
    return _SQL.replace("\nSELECT n, version", extra + "\nSELECT n, version").format(p=prefix)


@dataclass(slots=True)
class Save:
    """One conditional write of an agent's row (`if_match` None: insert if absent)."""

    agent_id: AgentId
    state: str | None
    state_version: int
    seen: str  # space-separated ids
    outbox: str  # JSON text
    if_match: int | None
    done: asyncio.Future[int | None]
    log: tuple[LogEntry, ...] = ()
    evicted: tuple[str, ...] = ()


class GroupCommit:
    """Batches `save`s and `clear`s into one statement per commit (see the module doc)."""

    def __init__(
        self,
        prefix: str,
        connect: Callable[[], Awaitable[Any]],
        translate: Callable[[BaseException], BaseException],
        *,
        clear_delay: float = 0.05,
    ) -> None:
        self._sql = _SQL.format(p=prefix)
        self._sql_one = _ONE.format(p=prefix)
        self._statements = {
            (log, evicted): statement(prefix, log=log, evicted=evicted)
            for log in (False, True)
            for evicted in (False, True)
        }
        self._connect = connect  # opens the commits' own connection
        self._conn: Any = None
        self._cur: Any = None
        self._translate = translate
        self._clear_delay = clear_delay
        self._saves: list[Save] = []
        self._clears: dict[AgentId, int] = {}
        self._clears_due = False  # the pending clears' delay is over: the next commit takes them
        self._flusher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def save(
        self,
        agent_id: AgentId,
        state: str | None,
        state_version: int,
        seen: str,
        outbox: str,
        if_match: int | None,
        log: tuple[LogEntry, ...] = (),
        evicted: tuple[str, ...] = (),
    ) -> int | None:
        """The new version, or None when the stored version is not `if_match`; `log`'s
        entries and the `evicted` ids are written if and only if the write succeeds."""
        done: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._clears.pop(agent_id, None)  # the save writes the outbox: no clear needed
        self._saves.append(
            Save(agent_id, state, state_version, seen, outbox, if_match, done, log, evicted)
        )
        self._start()
        return await done

    def clear(self, agent_id: AgentId, version: int) -> None:
        """Empty the outbox of the row at `version`, in some later commit."""
        self._clears[agent_id] = version
        self._arm()

    async def connect(self) -> None:
        """Open the commits' connection now (it is opened on the first commit otherwise)."""
        await self._connection()

    async def close(self) -> None:
        """Commit everything pending, then close the commits' connection."""
        await self.flush()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def flush(self) -> None:
        """Commit everything pending, clears included."""
        while self._flusher is not None or self._clears or self._saves:
            self._clears_due = True
            self._start()
            if self._flusher is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._flusher)

    def _arm(self) -> None:
        """Make the pending clears due after `clear_delay` (unless a batch of several
        saves takes them along first)."""
        if not self._clears:
            return
        if self._clears_due:
            self._start()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._clear_delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._clears:
            self._clears_due = True
            self._start()

    def _pending(self) -> bool:
        return bool(self._saves) or (self._clears_due and bool(self._clears))

    def _start(self) -> None:
        if self._flusher is None and self._pending():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending():
                await self._commit_next()
        except Exception as exc:  # no connection: fail what waits; the steps retry
            error = self._translate(exc)
            saves, self._saves = self._saves, []
            for save in saves:
                if not save.done.done():
                    save.done.set_exception(error)
            log.warning("PostgreSQL group commit failed: %s", exc)
        finally:
            self._flusher = None
            if self._pending():
                self._start()
            else:
                self._arm()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
        return self._conn

    def _cursor(self, conn: Any) -> Any:
        if self._cur is None or self._cur.connection is not conn:
            self._cur = conn.cursor()
        return self._cur

    async def _send(self, batch: list[Save], clears: dict[AgentId, int]) -> list[int | None]:
        """`_execute` on the commits' connection; once more on a new one if it was broken
        (see the module docstring)."""
        conn = await self._connection()
        try:
            return await self._execute(conn, batch, clears)
        except Exception:
            if not (conn.broken or conn.closed):
                raise
            log.info("the PostgreSQL connection of the group commit was lost; reconnecting")
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            return await self._execute(await self._connection(), batch, clears)

    async def _commit_next(self) -> None:
        batch: list[Save] = []
        agents: set[AgentId] = set()
        later: list[Save] = []
        for save in self._saves:  # one save per agent per statement
            if save.agent_id in agents or len(batch) >= MAX_BATCH:
                later.append(save)
            else:
                agents.add(save.agent_id)
                batch.append(save)
        self._saves = later
        clears: dict[AgentId, int] = {}
        if len(batch) != 1 or self._clears_due:  # a lone save goes as a plain UPDATE
            clears = {a: v for a, v in self._clears.items() if a not in agents}
            self._clears, self._clears_due = {}, False
        try:
            results = await self._send(batch, clears)
        except Exception as exc:
            if len(batch) + len(clears) <= 1:
                for save in batch:
                    save.done.set_exception(self._translate(exc))
                if clears:
                    log.warning("clearing an outbox failed (it is republished): %s", exc)
                return
            for save in batch:  # isolate the write that failed the batch
                try:
                    one = await self._send([save], {})
                except Exception as exc_one:
                    save.done.set_exception(self._translate(exc_one))
                else:
                    save.done.set_result(one[0])
            return
        for save, version in zip(batch, results, strict=True):
            if not save.done.done():
                save.done.set_result(version)

    async def _execute(
        self, conn: Any, batch: list[Save], clears: dict[AgentId, int]
    ) -> list[int | None]:
        """Run one statement; the new version of each save (None: conflict), in order."""
        if len(batch) == 1 and not clears:
            one = batch[0]
            if one.if_match is not None and not one.log and not one.evicted:
                aid = one.agent_id
                values = (one.state, one.state_version, one.seen, one.outbox)
                cur = self._cursor(conn)  # one per connection: a step's commit makes none
                await cur.execute(self._sql_one, (*values, aid.type, aid.key, one.if_match))
                row = await cur.fetchone()
                return [row[0] if row else None]
        pad: list[None] = [None] * len(clears)
        params: tuple[list[Any], ...] = (
            [*range(len(batch)), *pad],
            [s.agent_id.type for s in batch] + [a.type for a in clears],
            [s.agent_id.key for s in batch] + [a.key for a in clears],
            [s.state for s in batch] + pad,
            [s.state_version for s in batch] + pad,
            [s.seen for s in batch] + pad,
            [s.outbox for s in batch] + pad,
            [s.if_match for s in batch] + list(clears.values()),
        )
        sql = self._sql
        has_log = any(s.log for s in batch)
        has_evicted = any(s.evicted for s in batch)
        if has_log:
            entries = [(n, e) for n, s in enumerate(batch) for e in s.log]
            params += (
                [n for n, _ in entries],
                [e.stream for _, e in entries],
                [e.seq for _, e in entries],
                [e.data for _, e in entries],
            )
        if has_evicted:
            rows = [(n, s) for n, s in enumerate(batch) if s.evicted]
            params += (
                [n for n, _ in rows],
                [str(s.agent_id) for _, s in rows],
                [s.evicted[0] for _, s in rows],
                [evicted_text(s.evicted) for _, s in rows],
            )
        if has_log or has_evicted:
            sql = self._statements[has_log, has_evicted]
        if batch:
            cur = await conn.execute(sql, params)
        else:  # only clears: losing them in a crash is harmless, so do not wait for disk
            async with conn.transaction():
                await conn.execute("SET LOCAL synchronous_commit TO OFF")
                cur = await conn.execute(self._sql, params)
        found = await cur.fetchall()
        versions: list[int | None] = [None] * len(batch)
        inserted: dict[tuple[str, str], int] = {}
        for n, version, agent_type, agent_key in found:
            if n is not None:
                versions[n] = version
            else:
                inserted[agent_type, agent_key] = version
        for n, save in enumerate(batch):
            if save.if_match is None:
                versions[n] = inserted.get((save.agent_id.type, save.agent_id.key))
        return versions
