"""PostgreSQL store quirks beyond the StateStore conformance suite."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from cadre.envelope import Envelope, utcnow
from cadre.errors import ConcurrencyConflict, ConfigurationError, StoreError, UnstorableValue
from cadre.ids import AgentId
from cadre.stores.base import AgentRecord, DeadLetter, LogEntry
from tests.conftest import POSTGRES_DSN

A = AgentId("counter", "a")


def test_a_prefix_that_is_not_a_plain_identifier_is_refused() -> None:
    from cadre.stores.postgres import PostgresStore

    with pytest.raises(ConfigurationError, match="prefix"):
        PostgresStore(POSTGRES_DSN, prefix="x; DROP TABLE y --")


async def test_missing_tables_say_to_run_migrate(postgres_store) -> None:
    from cadre.stores.postgres import PostgresStore

    other = PostgresStore(POSTGRES_DSN, prefix=f"t{uuid.uuid4().hex[:12]}_")
    try:
        with pytest.raises(ConfigurationError, match="cadre db migrate"):
            await other.load(A)
    finally:
        await other.close()


async def test_an_unreachable_server_is_a_store_error() -> None:
    from cadre.stores.postgres import PostgresStore

    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", connect_timeout=0.5)
    with pytest.raises(StoreError, match="cannot connect"):
        await store.load(A)
    await store.close()


async def test_migrate_is_idempotent(postgres_store) -> None:
    await postgres_store.save(AgentRecord(A, state='{"n":1}'), if_match=None)
    await postgres_store.migrate()
    assert (await postgres_store.load(A)).state == '{"n":1}'


async def test_a_write_from_another_process_invalidates_this_ones_cached_record(
    postgres_store,
) -> None:
    from cadre.stores.postgres import PostgresStore

    first = await postgres_store.save(AgentRecord(A, state="1"), if_match=None)
    other = PostgresStore(POSTGRES_DSN, prefix=postgres_store.prefix)
    try:
        await other.save(AgentRecord(A, state="2"), if_match=first)
    finally:
        await other.close()
    stale = await postgres_store.load(A)  # served from this store's cache
    with pytest.raises(ConcurrencyConflict):
        await postgres_store.save(AgentRecord(A, state="3"), if_match=stale.etag)
    fresh = await postgres_store.load(A)
    assert fresh.state == "2"
    await postgres_store.save(AgentRecord(A, state="3"), if_match=fresh.etag)
    assert (await postgres_store.load(A)).state == "3"


async def test_the_state_is_jsonb_the_seen_ids_text_and_the_version_counts_writes(
    postgres_store,
) -> None:
    etag = await postgres_store.save(AgentRecord(A, state='{"n": 1}', seen=("e1",)), if_match=None)
    await postgres_store.save(AgentRecord(A, state='{"n": 2}', seen=("e1", "e2")), if_match=etag)
    pool = await postgres_store._open()
    async with pool.connection() as conn:
        cur = await conn.execute(
            f"SELECT state->>'n', seen, outbox, version FROM {postgres_store.prefix}agents"
        )
        assert await cur.fetchone() == ("2", "e1 e2", "[]", 2)


async def _layout(conn, prefix: str) -> tuple[list[str], list[str]]:
    """The agents table's index names and storage parameters."""
    cur = await conn.execute(
        "SELECT indexname FROM pg_indexes WHERE tablename = %s ORDER BY 1", (f"{prefix}agents",)
    )
    indexes = [name for (name,) in await cur.fetchall()]
    cur = await conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                             (f"{prefix}agents",))  # fmt: skip
    row = await cur.fetchone()
    return indexes, sorted(row[0] or [])


HOT_LAYOUT = ["fillfactor=40", "toast_tuple_target=8160"]

# Earlier layouts of the agents table, as `cadre db migrate` made them: the column types
# (state, seen, outbox) of the first and the second, both with an index over pending outboxes.
FIRST_LAYOUT = ("text", "jsonb NOT NULL DEFAULT '[]'", "jsonb NOT NULL DEFAULT '[]'")
SECOND_LAYOUT = ("jsonb", "text NOT NULL DEFAULT ''", "text NOT NULL DEFAULT '[]'")


async def _create_earlier_layout(conn, prefix: str, layout: tuple[str, str, str]) -> None:
    state, seen, outbox = layout
    await conn.execute(
        f"CREATE TABLE {prefix}agents (agent_type text NOT NULL, agent_key text NOT NULL, "
        f"state {state}, state_version int NOT NULL DEFAULT 1, seen {seen}, outbox {outbox}, "
        "version bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (agent_type, agent_key))"
    )
    await conn.execute(
        f"CREATE INDEX {prefix}agents_outbox_pending ON {prefix}agents (updated_at) "
        "WHERE outbox <> '[]'"
    )


async def test_a_steps_update_is_a_hot_one_no_index_but_the_primary_key(postgres_store) -> None:
    """An index over a column a step changes would make every update a full one (a new
    index entry per step); the table keeps room on its pages for the new versions."""
    from cadre.stores.postgres import PostgresStore

    prefix = postgres_store.prefix
    pool = await postgres_store._open()
    async with pool.connection() as conn:
        assert await _layout(conn, prefix) == ([f"{prefix}agents_pkey"], HOT_LAYOUT)
    store = PostgresStore(POSTGRES_DSN, prefix=prefix, min_size=1, max_size=1)
    try:
        etag = await store.save(AgentRecord(A, state='{"n": 0}'), if_match=None)
        for n in range(1, 21):
            seen = tuple(f"e{i}" for i in range(n))
            etag = await store.save(AgentRecord(A, state=f'{{"n": {n}}}', seen=seen), if_match=etag)
        # the saves went over the group commit's own connection: flush its statistics
        await store._commits._conn.execute("SELECT pg_stat_force_next_flush()")
        async with (await store._open()).connection() as conn:
            cur = await conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = %s",
                (f"{prefix}agents",),
            )
            assert await cur.fetchone() == (20, 20)
    finally:
        await store.close()


async def test_migrate_converts_tables_of_the_second_layout_dropping_the_outbox_index(
    postgres_store,
) -> None:
    from cadre.stores.postgres import PostgresStore

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    pool = await postgres_store._open()
    async with pool.connection() as conn:
        await _create_earlier_layout(conn, prefix, SECOND_LAYOUT)
        await conn.execute(
            f"INSERT INTO {prefix}agents (agent_type, agent_key, state, seen, version) "
            "VALUES ('counter', 'a', '{\"n\": 7}', 'e1 e2', 3)"
        )
    store = PostgresStore(POSTGRES_DSN, prefix=prefix)
    try:
        await store.migrate()
        async with pool.connection() as conn:
            assert await _layout(conn, prefix) == ([f"{prefix}agents_pkey"], HOT_LAYOUT)
            await conn.execute(f"ALTER TABLE {prefix}agents SET (fillfactor = 70)")  # an operator's
        await store.migrate()  # nothing left to convert, and the operator's choice stays
        async with pool.connection() as conn:
            assert (await _layout(conn, prefix))[1] == ["fillfactor=70", "toast_tuple_target=8160"]
        record = await store.load(A)
        assert (record.state, record.seen, record.etag) == ('{"n": 7}', ("e1", "e2"), "3")
    finally:
        await store.drop()
        await store.close()


async def test_migrate_converts_tables_of_the_first_layout_and_keeps_their_rows(
    postgres_store,
) -> None:
    from cadre.stores.postgres import PostgresStore

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    pool = await postgres_store._open()
    outbox = Envelope(
        id="o1", message="m", version=1, payload={"x": 1}, task_id="t", recipient="b/1",
        created_at=utcnow(),
    )  # fmt: skip
    async with pool.connection() as conn:
        await _create_earlier_layout(conn, prefix, FIRST_LAYOUT)
        await conn.execute(
            f"INSERT INTO {prefix}agents (agent_type, agent_key, state, seen, outbox, version) "
            "VALUES ('counter', 'a', '{\"n\": 7}', '[\"e1\", \"e2\"]', %s::jsonb, 3)",
            (f"[{outbox.to_bytes().decode()}]",),
        )
    store = PostgresStore(POSTGRES_DSN, prefix=prefix)
    try:
        await store.migrate()
        await store.migrate()  # and again: nothing left to convert
        record = await store.load(A)
        assert (record.state, record.seen, record.outbox, record.etag) == (
            '{"n": 7}',
            ("e1", "e2"),
            (outbox,),
            "3",
        )
        assert [agent for agent, _, _ in await store.stale_outboxes(0)] == [A]
        await store.save(dataclasses.replace(record, state='{"n": 8}', outbox=()), if_match="3")
        store._cache.clear()
        assert (await store.load(A)).state == '{"n": 8}'
        assert await store.stale_outboxes(0) == []
        async with pool.connection() as conn:
            assert await _layout(conn, prefix) == ([f"{prefix}agents_pkey"], HOT_LAYOUT)
    finally:
        await store.drop()
        await store.close()


async def test_cadre_db_migrate_creates_the_tables(postgres_store, monkeypatch, capsys) -> None:
    import asyncio

    from cadre.cli import main
    from cadre.stores.postgres import PostgresStore

    prefix = f"t{uuid.uuid4().hex[:12]}_"
    monkeypatch.setenv("CADRE_POSTGRES_URL", POSTGRES_DSN)
    monkeypatch.setenv("CADRE_POSTGRES_PREFIX", prefix)
    assert await asyncio.to_thread(main, ["db", "migrate"]) == 0
    assert prefix in capsys.readouterr().out
    store = PostgresStore(POSTGRES_DSN, prefix=prefix)
    try:
        assert (await store.load(A)).etag is None  # the tables exist
    finally:
        await store.drop()
        await store.close()


async def test_concurrent_first_steps_share_one_connection_pool(postgres_store) -> None:
    import asyncio

    from cadre.stores.postgres import PostgresStore

    store = PostgresStore(POSTGRES_DSN, prefix=postgres_store.prefix, min_size=2, max_size=2)
    try:
        await asyncio.gather(*(store.load(AgentId("counter", str(i))) for i in range(12)))
        pool = await postgres_store._open()
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (f"cadre {postgres_store.prefix}",),
            )
            row = await cur.fetchone()
        # this test's two stores: at most 4 (fixture) + 2 (this one) connections
        assert row is not None and row[0] <= 6
    finally:
        await store.close()


async def test_loads_of_one_loop_iteration_are_one_read_of_the_stored_and_the_new(
    postgres_store,
) -> None:
    """A burst of first steps (records not in the cache) reads its records with one
    statement: the stored ones whole, the others empty; an agent asked for twice gets its
    record twice; a load alone keeps the one-row statement."""
    import asyncio

    from cadre.stores.postgres import PostgresStore

    stored = [AgentId("counter", f"s{i}") for i in range(3)]
    for n, agent in enumerate(stored):
        await postgres_store.save(AgentRecord(agent, state=f'{{"n": {n}}}'), if_match=None)
    reader = PostgresStore(POSTGRES_DSN, prefix=postgres_store.prefix)  # an empty cache
    statements: list[str] = []
    execute = reader._execute

    async def counted(sql: str, params: tuple) -> list:  # type: ignore[type-arg]
        statements.append(sql)
        return await execute(sql, params)

    reader._execute = counted  # type: ignore[method-assign]
    try:
        wanted = [*stored, AgentId("counter", "new"), stored[1]]
        records = await asyncio.gather(*(reader.load(agent) for agent in wanted))
        assert [r.agent_id for r in records] == wanted
        assert [r.state for r in records] == ['{"n": 0}', '{"n": 1}', '{"n": 2}', None, '{"n": 1}']
        assert records[0].etag == "1" and records[3].etag is None
        assert statements == [reader._sql_load_many]
        alone = await reader.load(AgentId("counter", "alone"))
        assert alone.state is None and statements[1:] == [reader._sql_load]
    finally:
        await reader.close()


async def test_a_failed_read_fails_every_load_it_carried_and_a_cancelled_one_alone(
    postgres_store,
) -> None:
    import asyncio

    from cadre.stores.postgres import PostgresStore

    await postgres_store.save(AgentRecord(A, state='{"n": 1}'), if_match=None)
    missing = PostgresStore(POSTGRES_DSN, prefix=f"t{uuid.uuid4().hex[:12]}_")  # no tables
    try:
        results = await asyncio.gather(
            *(missing.load(AgentId("counter", k)) for k in "abc"), return_exceptions=True
        )
        assert all(isinstance(r, ConfigurationError) for r in results), results
    finally:
        await missing.close()
    reader = PostgresStore(POSTGRES_DSN, prefix=postgres_store.prefix)
    try:
        gone = asyncio.ensure_future(reader.load(A))
        kept = asyncio.ensure_future(reader.load(A))
        await asyncio.sleep(0)  # both are waiting for the one read
        gone.cancel()
        assert (await kept).state == '{"n": 1}'
        assert gone.cancelled()
    finally:
        await reader.close()


async def test_concurrent_saves_share_commits_and_a_stale_one_fails_alone(
    postgres_store, monkeypatch
) -> None:
    import asyncio

    from cadre.stores._postgres_commit import GroupCommit

    statements: list[int] = []
    execute = GroupCommit._execute

    async def counting(self, conn, batch, clears):  # type: ignore[no-untyped-def]
        statements.append(len(batch))
        return await execute(self, conn, batch, clears)

    monkeypatch.setattr(GroupCommit, "_execute", counting)
    agents = [AgentId("counter", str(i)) for i in range(20)]
    etags = await asyncio.gather(
        *(postgres_store.save(AgentRecord(a, state="0"), if_match=None) for a in agents)
    )
    writes = [
        postgres_store.save(AgentRecord(a, state="1"), if_match="999" if i == 7 else etag)
        for i, (a, etag) in enumerate(zip(agents, etags, strict=True))
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert [i for i, r in enumerate(results) if isinstance(r, ConcurrencyConflict)] == [7]
    assert len(statements) < 20  # 40 writes went in fewer statements (group commit)
    postgres_store._cache.clear()  # read the table, not this store's cache
    assert [(await postgres_store.load(a)).state for a in agents] == [
        "0" if i == 7 else "1" for i in range(20)
    ]


async def test_a_write_that_fails_its_batch_fails_alone(postgres_store) -> None:
    import asyncio

    agents = [AgentId("counter", str(i)) for i in range(5)]
    results = await asyncio.gather(
        *(
            postgres_store.save(AgentRecord(a, state="not json" if i == 2 else "{}"), if_match=None)
            for i, a in enumerate(agents)
        ),
        return_exceptions=True,
    )
    assert isinstance(results[2], UnstorableValue)  # permanent: not JSON
    assert all(isinstance(r, str) for i, r in enumerate(results) if i != 2)
    postgres_store._cache.clear()
    assert [(await postgres_store.load(a)).state for a in agents] == [
        "{}", "{}", None, "{}", "{}"
    ]  # fmt: skip


async def _saved_and_cleared(store) -> None:  # type: ignore[no-untyped-def]
    """A saved with one outgoing envelope, then its outbox cleared (not waited for)."""
    from cadre.envelope import Envelope, new_id, utcnow

    out = Envelope(
        id=new_id(), message="m", version=1, payload={}, task_id="t", recipient="sink/a",
        created_at=utcnow(),
    )  # fmt: skip
    etag = await store.save(AgentRecord(A, state="{}", outbox=(out,)), if_match=None)
    await store.clear_outbox(A, etag)


async def test_an_outbox_clear_rides_along_and_lands(postgres_store) -> None:
    await _saved_and_cleared(postgres_store)
    assert (await postgres_store.load(A)).outbox == ()  # this process sees it at once
    await postgres_store._commits.flush()
    postgres_store._cache.clear()
    assert (await postgres_store.load(A)).outbox == ()  # and the table too


async def test_a_pending_clear_lands_while_lone_saves_keep_coming(postgres_store) -> None:
    """A lone save goes as a plain UPDATE without the pending clears; they still land once
    their delay is over, though the saves never stop."""
    import asyncio

    await _saved_and_cleared(postgres_store)
    other = AgentId("counter", "busy")
    busy = await postgres_store.save(AgentRecord(other, state="0"), if_match=None)
    pool = await postgres_store._open()
    stored = "?"
    for n in range(200):  # a serial conversation's saves, one after the other
        busy = await postgres_store.save(AgentRecord(other, state=str(n)), if_match=busy)
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT outbox FROM {postgres_store.prefix}agents WHERE agent_key = %s",
                (A.key,),
            )
            stored = (await cur.fetchone())[0]
        if stored == "[]":
            break
        await asyncio.sleep(0.001)
    assert stored == "[]"
    assert n > 0  # the first saves went without it: the clear waited for its delay


async def test_forget_drops_cached_records_another_process_may_have_written(
    postgres_store,
) -> None:
    from cadre.stores.postgres import PostgresStore

    b = AgentId("counter", "b")
    etags = [
        await postgres_store.save(AgentRecord(a, state='{"n": 1}'), if_match=None) for a in (A, b)
    ]
    other = PostgresStore(POSTGRES_DSN, prefix=postgres_store.prefix, cache_size=0)
    try:  # another worker writes both while this store holds their records in its cache
        for agent, etag in zip((A, b), etags, strict=True):
            await other.save(AgentRecord(agent, state='{"n": 2}'), if_match=etag)
    finally:
        await other.close()
    assert (await postgres_store.load(A)).state == '{"n": 1}'  # the cache: stale
    postgres_store.forget(lambda agent: agent == A)
    assert (await postgres_store.load(A)).state == '{"n": 2}'  # read afresh
    assert (await postgres_store.load(b)).state == '{"n": 1}'  # not selected: still cached


async def test_stale_outboxes_lists_what_a_crash_left_oldest_first(postgres_store) -> None:
    import asyncio

    from cadre.envelope import Envelope, new_id, utcnow

    def out() -> Envelope:
        return Envelope(
            id=new_id(), message="m", version=1, payload={}, task_id="t", recipient="sink/a",
            created_at=utcnow(),
        )  # fmt: skip

    b, c = AgentId("counter", "b"), AgentId("counter", "c")
    left = out()
    etag = await postgres_store.save(AgentRecord(A, state="{}", outbox=(left,)), if_match=None)
    await postgres_store.save(AgentRecord(b, state="{}", outbox=(out(),)), if_match=None)
    await postgres_store.save(AgentRecord(c, state="{}"), if_match=None)  # nothing to send
    await asyncio.sleep(0.05)
    stale = await postgres_store.stale_outboxes(0.0)
    assert [(agent, len(outbox)) for agent, _, outbox in stale] == [(A, 1), (b, 1)]
    assert stale[0] == (A, etag, (left,))
    assert await postgres_store.stale_outboxes(60.0) == []  # younger than that: under way
    await postgres_store.clear_outbox(A, etag)
    await postgres_store._commits.flush()
    assert [agent for agent, _, _ in await postgres_store.stale_outboxes(0.0)] == [b]


async def test_log_entries_ride_in_the_group_commit_only_with_a_successful_write(
    postgres_store,
) -> None:
    """Managers' saves with entries share one statement; a stale one appends nothing."""
    import asyncio

    from cadre.stores.base import LogEntry

    managers = [AgentId("cadre.team", f"t{i}") for i in range(6)]
    etags = [await postgres_store.save(AgentRecord(m, state="{}"), if_match=None) for m in managers]
    await postgres_store.save(AgentRecord(managers[0], state="{}"), if_match=etags[0])
    writes = [
        postgres_store.save(
            AgentRecord(m, state="{}", log=(LogEntry(str(m), 0, f'"{m.key}"'),)), if_match=etag
        )
        for m, etag in zip(managers, etags, strict=True)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[0], ConcurrencyConflict)  # its etag was stale
    assert all(isinstance(r, str) for r in results[1:])
    logs = [await postgres_store.read_log(str(m), 0, 10) for m in managers]
    assert logs[0] == [] and [[e.data for e in log] for log in logs[1:]] == [
        [f'"t{i}"'] for i in range(1, 6)
    ]


@pytest.mark.parametrize(
    "record",
    [
        AgentRecord(A, state='{"text": "a\\u0000b"}'),  # NUL in jsonb
        AgentRecord(A, state="{}", seen=("e\x00",)),  # NUL in text
        AgentRecord(A, state="{}", log=(LogEntry("s", 0, '"a\x00b"'),)),
        AgentRecord(A, state='{"text": "a\ud800b"}'),  # a lone surrogate: not UTF-8
    ],
    ids=["nul-in-state", "nul-in-seen", "nul-in-log", "lone-surrogate"],
)
async def test_text_postgresql_cannot_hold_is_refused_for_good_not_as_an_outage(
    postgres_store, record: AgentRecord
) -> None:
    with pytest.raises(UnstorableValue, match="cannot hold this value") as caught:
        await postgres_store.save(record, if_match=None)
    assert caught.value.reason == "unstorable_value"
    assert not isinstance(caught.value, StoreError)  # a StoreError means "retry later"
    postgres_store._cache.clear()
    assert (await postgres_store.load(A)).etag is None  # nothing was stored
    assert await postgres_store.read_log("s") == []


async def test_a_message_whose_text_postgresql_cannot_hold_is_dead_lettered_at_once(
    postgres_store,
) -> None:
    from cadre import LocalRuntime, RetryPolicy
    from tests.support.contracts import Note, make_registry

    recorder = AgentId("recorder", "nul")
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.01)
    async with LocalRuntime(store=postgres_store, registry=make_registry(), policy=policy) as rt:
        await rt.send(recorder, Note(text="before\x00after"))
        await rt.run_until_idle()
        [letter] = await postgres_store.list_dead_letters()
        assert (letter.reason, letter.attempts) == ("unstorable_value", 1)
        assert "U+0000" in letter.detail
        await rt.send(recorder, Note(text="fine"))  # the agent goes on
        await rt.run_until_idle()
        assert (await rt.state(recorder)).notes == ["fine"]  # type: ignore[attr-defined]


async def test_a_dead_letter_whose_text_has_nul_is_kept_with_it_escaped(postgres_store) -> None:
    letter = DeadLetter(
        id="d-nul", body=b'{"x": "\\u0000"}', reason="handler_failed",
        detail="boom: a\x00b \ud800", failed_at=utcnow(), attempts=5,
        agent="recorder/a", message="test.Note", task_id=None, extra={"why": "\x00"},
    )  # fmt: skip
    await postgres_store.add_dead_letter(letter)
    kept = await postgres_store.get_dead_letter("d-nul")
    assert (kept.body, kept.detail, kept.extra) == (
        letter.body, "boom: a\\u0000b \\ud800", {"why": "\\u0000"},
    )  # fmt: skip


async def _terminate_backends(store) -> int:  # type: ignore[no-untyped-def]
    """End this store's server connections (the pool's and the group commit's, by their
    application_name), as a database restart or failover would."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name IN (%s, %s) AND pid <> pg_backend_pid()",
            (f"cadre {store.prefix}", f"cadre {store.prefix} commits"),
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def test_the_first_request_after_the_connections_dropped_is_served(postgres_store) -> None:
    await postgres_store.save(AgentRecord(A, state='{"n": 1}'), if_match=None)
    postgres_store._cache.clear()
    for _ in range(3):
        assert await _terminate_backends(postgres_store) >= 1
        postgres_store._cache.clear()
        assert (await postgres_store.load(A)).state == '{"n": 1}'
        etag = (await postgres_store.load(A)).etag
        await postgres_store.save(AgentRecord(A, state='{"n": 1}'), if_match=etag)
