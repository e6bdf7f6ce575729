"""A PostgreSQL state store (psycopg 3, async, pooled): the workers' shared state.

    store = PostgresStore("postgresql://postgres@127.0.0.1/test")
    await store.migrate()                       # or: cadre db migrate

One row per agent instance in ``<prefix>agents``: the state (jsonb, so it can be queried:
``state->>'field'``); the seen ids (space-separated) and the outbox (JSON) as text, which
only Cadre reads and the server then need not parse on every write; and a ``version``
column. `save` is one conditional statement (``UPDATE ... WHERE version = $if_match`` or
``INSERT ... ON CONFLICT DO NOTHING``): a writer holding a stale version changes nothing
and gets `ConcurrencyConflict`. The etag is the version as text. Dead letters live in
``<prefix>dead_letters``.

Saves are group-committed (`cadre.stores._postgres_commit`): the saves that arrive while
a commit is under way go together in the next one, one statement and one WAL flush for
many agents, each row still conditional on its own version. A lone step is not delayed.

Reads are served from a per-process cache of the records this store wrote, because a
partition (and so an agent) has one active consumer at a time: the cached record is the
stored one unless another worker wrote since, and then the conditional write fails,
the entry is dropped, and the step is redone on a fresh read. Correctness rests on the
version check alone; the cache only saves the read round trip. `cache_size=0` disables it.
The reads it cannot serve that are asked for in one event-loop iteration (a burst of first
steps) go as one statement (`cadre.stores._postgres_load`).

The agents table has no index but its primary key, and leaves 60 % of each page free
(``fillfactor = 40``), so a step's update is a HOT one: the new row version goes on the
same page and no index is touched. An index over any column a step changes (``outbox``,
``updated_at``) would make every update a full one: measured on ping-pong, 0 of 31,968
updates were HOT with an index over pending outboxes and 31,913 without it, and
PostgreSQL's CPU per message fell by more than half (57 → 27 µs; 161 → 73 µs on a slower
day of the same machine). ``toast_tuple_target = 8160`` keeps rows of a few kB (64 seen
ids are ~2 kB) inline instead of compressing them on every write. The relay's query for
outboxes a crash left behind (`stale_outboxes`) is therefore a sequential scan; the
workers space it by its duration (`cadre.hosts.worker`).

Agents' logs (a team's transcript) are rows of ``<prefix>log`` keyed by (stream, seq). A
save that appends entries (a team manager's step) joins the group commit like any other:
the batch's statement inserts each entry only if its save's conditional write succeeded,
so the entries are in the log exactly when the record is. The ids a save moves out of
`seen` are one row of ``<prefix>evicted`` per save, keyed by (agent, first id), written the
same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from ..envelope import Envelope
from ..errors import (
    ConcurrencyConflict,
    ConfigurationError,
    NotFound,
    StoreError,
    UnstorableValue,
)
from ..ids import AgentId
from ._postgres_commit import GroupCommit
from ._postgres_load import GroupLoad, Row
from .base import (
    AgentRecord,
    DeadLetter,
    LogEntry,
    evicted_needle,
    record_outbox_json,
    seen_ids,
    seen_text,
    storable_letter,
)

log = logging.getLogger("cadre.stores.postgres")

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

HOT_STORAGE = "fillfactor = 40, toast_tuple_target = 8160"
"""The agents table's storage parameters (see the module docstring)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS {p}agents (
    agent_type    text   NOT NULL,
    agent_key     text   NOT NULL,
    state         jsonb,
    state_version int    NOT NULL DEFAULT 1,
    seen          text   NOT NULL DEFAULT '',
    outbox        text   NOT NULL DEFAULT '[]',
    version       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_type, agent_key)
) WITH ({hot});
CREATE TABLE IF NOT EXISTS {p}log (
    stream text   NOT NULL,
    seq    bigint NOT NULL,
    data   text   NOT NULL,
    PRIMARY KEY (stream, seq)
);
CREATE TABLE IF NOT EXISTS {p}evicted (
    agent text NOT NULL,
    first text NOT NULL,
    ids   text NOT NULL,
    PRIMARY KEY (agent, first)
);
CREATE TABLE IF NOT EXISTS {p}dead_letters (
    id        text PRIMARY KEY,
    body      bytea NOT NULL,
    reason    text NOT NULL,
    detail    text NOT NULL,
    failed_at timestamptz NOT NULL,
    attempts  int NOT NULL,
    agent     text,
    message   text,
    task_id   text,
    extra     jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS {p}dead_letters_failed_at ON {p}dead_letters (failed_at DESC);
DO $$ BEGIN  -- tables of the second layout: an index over pending outboxes (see above)
    IF to_regclass('{p}agents_outbox_pending') IS NOT NULL THEN
        DROP INDEX {p}agents_outbox_pending;
        ALTER TABLE {p}agents SET ({hot});
    END IF;
END $$;
DO $$ BEGIN  -- tables of the first layout (state text, seen and outbox jsonb): convert them
    IF (SELECT atttypid FROM pg_attribute
        WHERE attrelid = '{p}agents'::regclass AND attname = 'seen') = 'jsonb'::regtype THEN
        ALTER TABLE {p}agents ADD COLUMN seen_ids text NOT NULL DEFAULT '';
        UPDATE {p}agents
            SET seen_ids = array_to_string(ARRAY(SELECT jsonb_array_elements_text(seen)), ' ');
        ALTER TABLE {p}agents DROP COLUMN seen;
        ALTER TABLE {p}agents RENAME COLUMN seen_ids TO seen;
        ALTER TABLE {p}agents
            ALTER COLUMN state TYPE jsonb USING state::jsonb,
            ALTER COLUMN outbox DROP DEFAULT, ALTER COLUMN outbox TYPE text USING outbox::text,
            ALTER COLUMN outbox SET DEFAULT '[]';
    END IF;
END $$;
"""


def _psycopg() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        raise ConfigurationError(
            "the PostgreSQL store needs psycopg: pip install -e '.[workers]'"
        ) from None
    return psycopg, psycopg_pool


class PostgresStore:
    """State store on PostgreSQL; tables are named ``<prefix>agents``, ``<prefix>log``,
    ``<prefix>evicted`` and ``<prefix>dead_letters`` (the prefix lets tests and apps share
    one database)."""

    max_item_bytes: int | None = None
    """PostgreSQL's own limit (1 GB a value) is far beyond what a step could write."""

    def __init__(
        self,
        dsn: str,
        *,
        prefix: str = "cadre_",
        min_size: int = 1,
        max_size: int = 8,
        cache_size: int = 10_000,
        connect_timeout: float = 10.0,
    ) -> None:
        if not _PREFIX.match(prefix):
            raise ConfigurationError(f"table prefix {prefix!r} must match {_PREFIX.pattern}")
        self.dsn, self.prefix = dsn, prefix
        self._min, self._max = min_size, max_size
        self._pool: Any = None
        self._cache: dict[AgentId, AgentRecord] = {}
        self._cache_size = cache_size
        self._commits = GroupCommit(prefix, self._connect_commits, self._translate)
        self._opening = asyncio.Lock()
        self._connect_timeout = connect_timeout
        p = prefix
        self._sql_load = (
            f"SELECT state::text, state_version, seen, outbox, version FROM {p}agents "
            "WHERE agent_type = %s AND agent_key = %s"
        )
        self._sql_load_many = (
            f"SELECT a.agent_type, a.agent_key, state::text, state_version, seen, outbox, "
            f"version FROM {p}agents a JOIN unnest(%s::text[], %s::text[]) AS w(t, k) "
            "ON a.agent_type = w.t AND a.agent_key = w.k"
        )
        self._loads = GroupLoad(self._read)
        self._sql_clear = (
            f"UPDATE {p}agents SET outbox = '[]' WHERE agent_type = %s AND agent_key = %s "
            "AND version = %s AND outbox <> '[]'"
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = await self._open()
        async with pool.connection() as conn:
            yield conn

    async def _open(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._opening:  # concurrent first steps must share one pool
            if self._pool is not None:
                return self._pool
            _, psycopg_pool = _psycopg()
            pool = psycopg_pool.AsyncConnectionPool(
                self.dsn,
                min_size=self._min,
                max_size=self._max,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 1,
                    "application_name": f"cadre {self.prefix}",
                },
                # A connection the server dropped (a restart, a failover) is found and
                # replaced when it is taken, so the first request after recovery succeeds.
                check=psycopg_pool.AsyncConnectionPool.check_connection,
                open=False,
            )
            try:
                await pool.open(wait=True, timeout=self._connect_timeout)
            except Exception as exc:
                await pool.close()
                raise StoreError(f"cannot connect to PostgreSQL at {self.dsn}: {exc}") from exc
            self._pool = pool
        return self._pool

    async def connect(self) -> None:
        """Open the pool and the group commit's connection now rather than at the first
        step (a worker does this before it consumes: its first steps then run as fast as
        the rest); raises `StoreError` when PostgreSQL cannot be reached."""
        await self._open()
        try:
            await self._commits.connect()
        except Exception as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self.dsn}: {exc}") from exc

    async def _connect_commits(self) -> Any:
        """The group commit's own connection (see `cadre.stores._postgres_commit`)."""
        psycopg, _ = _psycopg()
        return await psycopg.AsyncConnection.connect(
            self.dsn,
            autocommit=True,
            prepare_threshold=1,
            application_name=f"cadre {self.prefix} commits",
            connect_timeout=max(1, round(self._connect_timeout)),
        )

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        psycopg, _ = _psycopg()
        pool = await self._open()
        try:
            async with pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall() if cur.description else []
        except (psycopg.Error, UnicodeEncodeError) as exc:
            raise self._translate(exc) from exc

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist (idempotent)."""
        pool = await self._open()
        async with pool.connection() as conn:
            await conn.execute(SCHEMA.format(p=self.prefix, hot=HOT_STORAGE), prepare=False)

    async def drop(self) -> None:
        """Drop this prefix's tables (tests, teardown)."""
        pool = await self._open()
        await self._commits.flush()
        async with pool.connection() as conn:
            await conn.execute(
                f"DROP TABLE IF EXISTS {self.prefix}agents, {self.prefix}log, "
                f"{self.prefix}evicted, {self.prefix}dead_letters",
                prepare=False,
            )

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """The stored record (from the cache of what this store wrote), or an empty one."""
        cached = self._cache.get(agent_id)
        if cached is not None:
            return cached
        row = await self._loads.load(agent_id)  # with the other loads of this iteration
        if row is None:
            return AgentRecord(agent_id)
        state, state_version, seen, outbox, version = row
        return AgentRecord(
            agent_id,
            state,
            state_version,
            seen_ids(seen),
            _envelopes(outbox),
            str(version),
        )

    async def _read(self, agents: Sequence[AgentId]) -> dict[AgentId, Row]:
        """The stored rows of `agents` (`GroupLoad`'s read): one row's statement for one,
        one lookup of the primary key for several."""
        if len(agents) == 1:
            (agent,) = agents
            rows = await self._execute(self._sql_load, (agent.type, agent.key))
            return {agent: rows[0]} if rows else {}
        rows = await self._execute(
            self._sql_load_many, ([a.type for a in agents], [a.key for a in agents])
        )
        found = {(row[0], row[1]): row[2:] for row in rows}
        return {a: found[a.type, a.key] for a in agents if (a.type, a.key) in found}

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """One conditional write on the version column, group-committed with others."""
        aid = record.agent_id
        version = await self._commits.save(
            aid,
            record.state,
            record.state_version,
            seen_text(record.seen),
            record_outbox_json(record),
            None if if_match is None else int(if_match),
            record.log,
            record.evicted,
        )
        if version is None:
            self._cache.pop(aid, None)  # someone else wrote: read it afresh next time
            raise ConcurrencyConflict(f"{aid}: the stored version is not {if_match}")
        etag = str(version)
        self._remember(record.with_etag(etag))
        return etag

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """One range scan of the primary key."""
        rows = await self._execute(
            f"SELECT seq, data FROM {self.prefix}log WHERE stream = %s AND seq >= %s "
            "ORDER BY seq LIMIT %s",
            (stream, max(start, 0), max(limit, 0)),
        )
        return [LogEntry(stream, seq, data) for seq, data in rows]

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """A range of the primary key: the agent's rows, one per evicting save (its group
        commit has returned: the step that evicted the id waited for its save)."""
        rows = await self._execute(
            f"SELECT 1 FROM {self.prefix}evicted WHERE agent = %s AND strpos(ids, %s) > 0 LIMIT 1",
            (str(agent_id), evicted_needle(envelope_id)),
        )
        return bool(rows)

    def forget(self, which: Callable[[AgentId], bool]) -> None:
        """Drop the cached records of the agents `which` selects: another process may have
        written them since (a worker calls this when it becomes a partition's active
        consumer again; a read that no conditional write follows must not trust them)."""
        for agent in [a for a in self._cache if which(a)]:
            del self._cache[agent]

    def _remember(self, record: AgentRecord) -> None:
        if not self._cache_size:
            return
        self._cache.pop(record.agent_id, None)
        self._cache[record.agent_id] = record
        if len(self._cache) > self._cache_size:
            del self._cache[next(iter(self._cache))]  # the least recently written

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the outbox if the record is still the one written with `etag`.

        Off the step's critical path: the write joins a later group commit without being
        waited for. It is conditional on the version, so a later save always wins over it,
        and if it never lands the outbox is only published again with the same ids, which
        receivers drop. This process's reads see it cleared at once.
        """
        cached = self._cache.get(agent_id)
        if cached is not None and cached.etag == etag:
            self._cache[agent_id] = cached.with_outbox(())
        elif not self._cache_size:  # reads go to the table: clear it before returning
            await self._execute(self._sql_clear, (agent_id.type, agent_id.key, int(etag)))
            return
        self._commits.clear(agent_id, int(etag))

    async def stale_outboxes(
        self, older_than: float, limit: int = 500
    ) -> list[tuple[AgentId, str, tuple[Envelope, ...]]]:
        """The agents whose outbox is not empty and whose row is unchanged for `older_than`
        seconds, oldest first, as ``(agent, etag, outbox)``: what a crash left unpublished
        (the workers' relay republishes them). A sequential scan: no index, so that steps'
        updates stay HOT (see the module docstring)."""
        rows = await self._execute(
            f"SELECT agent_type, agent_key, version, outbox FROM {self.prefix}agents "
            "WHERE outbox <> '[]' AND updated_at < now() - make_interval(secs => %s) "
            "ORDER BY updated_at LIMIT %s",
            (older_than, limit),
        )
        return [
            (
                AgentId(agent_type, agent_key),
                str(version),
                _envelopes(outbox),
            )
            for agent_type, agent_key, version, outbox in rows
        ]

    def _translate(self, exc: BaseException) -> BaseException:
        psycopg, _ = _psycopg()
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return ConfigurationError(
                f"PostgreSQL tables {self.prefix}* are missing: run `cadre db migrate`"
            )
        if isinstance(exc, psycopg.DataError | UnicodeEncodeError):
            # U+0000 in text or jsonb, a lone surrogate, state that is not JSON: permanent
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return UnstorableValue(
                f"PostgreSQL cannot hold this value ({detail}; U+0000 and lone surrogates "
                "never fit); retrying cannot help, nothing was stored"
            )
        if isinstance(exc, psycopg.Error):
            return StoreError(f"PostgreSQL failed: {exc}")
        return exc

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it (idempotent by id)."""
        psycopg, _ = _psycopg()
        letter = storable_letter(letter)
        await self._execute(
            f"INSERT INTO {self.prefix}dead_letters (id, body, reason, detail, failed_at, "
            "attempts, agent, message, task_id, extra) VALUES (%s, %s, %s, %s, %s, %s, %s, "
            "%s, %s, %s) ON CONFLICT (id) DO NOTHING",
            (
                letter.id, letter.body, letter.reason, letter.detail, letter.failed_at,
                letter.attempts, letter.agent, letter.message, letter.task_id,
                psycopg.types.json.Jsonb(letter.extra),
            ),
        )  # fmt: skip

    _LETTER_COLUMNS = (
        "id, body, reason, detail, failed_at, attempts, agent, message, task_id, extra"
    )

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first."""
        rows = await self._execute(
            f"SELECT {self._LETTER_COLUMNS} FROM {self.prefix}dead_letters "
            "ORDER BY failed_at DESC LIMIT %s",
            (limit,),
        )
        return [_letter(r) for r in rows]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter or `NotFound`."""
        rows = await self._execute(
            f"SELECT {self._LETTER_COLUMNS} FROM {self.prefix}dead_letters WHERE id = %s",
            (letter_id,),
        )
        if not rows:
            raise NotFound(f"no dead letter with id {letter_id!r}")
        return _letter(rows[0])

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove one or raise `NotFound`."""
        rows = await self._execute(
            f"DELETE FROM {self.prefix}dead_letters WHERE id = %s RETURNING id", (letter_id,)
        )
        if not rows:
            raise NotFound(f"no dead letter with id {letter_id!r}")

    async def close(self) -> None:
        """Commit the writes under way and the pending outbox clears, then close the pool."""
        await self._commits.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _envelopes(outbox: str) -> tuple[Envelope, ...]:
    return tuple(Envelope.model_validate(e) for e in json.loads(outbox))


def _letter(row: tuple[Any, ...]) -> DeadLetter:
    id_, body, reason, detail, failed_at, attempts, agent, message, task_id, extra = row
    assert isinstance(failed_at, datetime)
    return DeadLetter(
        id=id_,
        body=bytes(body),
        reason=reason,
        detail=detail,
        failed_at=failed_at,
        attempts=attempts,
        agent=agent,
        message=message,
        task_id=task_id,
        extra=dict(extra),
    )
