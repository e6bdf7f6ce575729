"""The StateStore contract, run over every store adapter (see tests/conftest.py STORES)."""

from __future__ import annotations

import asyncio
import inspect
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadre.envelope import Envelope, new_id
from cadre.errors import ConcurrencyConflict, NotFound, UnstorableValue
from cadre.ids import AgentId
from cadre.stores.base import AgentRecord, DeadLetter, LogEntry

A = AgentId("counter", "a")


def state(record: AgentRecord) -> Any:
    """The state as a JSON value: a store may keep it in another JSON formatting (jsonb)."""
    return None if record.state is None else json.loads(record.state)


def envelope(n: int) -> Envelope:
    return Envelope(
        id=f"out-{n}",
        message="test.Add",
        version=1,
        payload={"amount": n},
        task_id="t1",
        recipient="recorder/a",
        sender="counter/a",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_missing_record_loads_empty(store) -> None:
    record = await store.load(A)
    assert record == AgentRecord(A)
    assert record.etag is None


async def test_save_then_load_returns_everything_written(store) -> None:
    written = AgentRecord(
        A, state='{"total":3}', state_version=2, seen=("e1", "e2"), outbox=(envelope(1),)
    )
    etag = await store.save(written, if_match=None)
    loaded = await store.load(A)
    assert loaded.etag == etag
    assert state(loaded) == {"total": 3}
    assert loaded.state_version == 2
    assert loaded.seen == ("e1", "e2")
    assert loaded.outbox == (envelope(1),)


async def test_create_when_record_exists_is_a_conflict(store) -> None:
    await store.save(AgentRecord(A, state='{"total":1}'), if_match=None)
    with pytest.raises(ConcurrencyConflict):
        await store.save(AgentRecord(A, state='{"total":2}'), if_match=None)
    assert state(await store.load(A)) == {"total": 1}


async def test_stale_etag_is_a_conflict_and_changes_nothing(store) -> None:
    first = await store.save(AgentRecord(A, state='{"total":1}'), if_match=None)
    second = await store.save(AgentRecord(A, state='{"total":2}'), if_match=first)
    assert second != first
    with pytest.raises(ConcurrencyConflict):
        await store.save(AgentRecord(A, state='{"total":99}'), if_match=first)
    loaded = await store.load(A)
    assert (state(loaded), loaded.etag) == ({"total": 2}, second)


async def test_racing_writers_one_wins_per_version(store) -> None:
    base = await store.save(AgentRecord(A, state="0"), if_match=None)
    results = await asyncio.gather(
        *(store.save(AgentRecord(A, state=str(i)), if_match=base) for i in range(1, 6)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, str)]
    assert len(wins) == 1
    assert all(isinstance(r, ConcurrencyConflict) for r in results if not isinstance(r, str))


async def test_clear_outbox_empties_it_and_keeps_the_rest(store) -> None:
    etag = await store.save(
        AgentRecord(A, state="1", seen=("e1",), outbox=(envelope(1), envelope(2))), if_match=None
    )
    await store.clear_outbox(A, etag)
    loaded = await store.load(A)
    assert loaded.outbox == ()
    assert (loaded.state, loaded.seen) == ("1", ("e1",))
    # The record is still writable with the etag it had (clearing races no later writer).
    await store.save(AgentRecord(A, state="2"), if_match=loaded.etag)


async def test_clear_outbox_with_an_old_etag_leaves_a_newer_outbox(store) -> None:
    old = await store.save(AgentRecord(A, state="1", outbox=(envelope(1),)), if_match=None)
    await store.save(AgentRecord(A, state="2", outbox=(envelope(2),)), if_match=old)
    await store.clear_outbox(A, old)
    assert (await store.load(A)).outbox == (envelope(2),)


async def test_agents_are_independent(store) -> None:
    b = AgentId("counter", "b")
    await store.save(AgentRecord(A, state='"a"'), if_match=None)
    await store.save(AgentRecord(b, state='"b"'), if_match=None)
    assert state(await store.load(A)) == "a"
    assert state(await store.load(b)) == "b"


def letter(i: int, minutes: int) -> DeadLetter:
    return DeadLetter(
        id=f"dl-{i}",
        body=b'{"not": "an envelope"}\x00\xff',
        reason="payload_invalid",
        detail=f"detail {i}",
        failed_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        attempts=3,
        agent="counter/a",
        message="test.Add",
        task_id="t1",
        extra={"traceback": "Traceback ..."},
    )


async def test_dead_letters_round_trip_with_their_bytes(store) -> None:
    await store.add_dead_letter(letter(1, 0))
    assert await store.get_dead_letter("dl-1") == letter(1, 0)


async def test_dead_letters_list_newest_first_and_limit(store) -> None:
    for i, minutes in [(1, 5), (2, 1), (3, 9)]:
        await store.add_dead_letter(letter(i, minutes))
    assert [d.id for d in await store.list_dead_letters()] == ["dl-3", "dl-1", "dl-2"]
    assert [d.id for d in await store.list_dead_letters(limit=1)] == ["dl-3"]


async def test_adding_a_dead_letter_twice_keeps_one(store) -> None:
    await store.add_dead_letter(letter(1, 0))
    await store.add_dead_letter(letter(1, 0))
    assert len(await store.list_dead_letters()) == 1


async def test_deleting_dead_letters(store) -> None:
    await store.add_dead_letter(letter(1, 0))
    await store.delete_dead_letter("dl-1")
    assert await store.list_dead_letters() == []
    with pytest.raises(NotFound):
        await store.get_dead_letter("dl-1")
    with pytest.raises(NotFound):
        await store.delete_dead_letter("dl-1")


async def test_many_agents_many_versions(store) -> None:
    ids = [AgentId("counter", new_id()) for _ in range(50)]
    etags = {i: await store.save(AgentRecord(i, state="0"), if_match=None) for i in ids}
    for round_ in range(1, 4):
        for i in ids:
            etags[i] = await store.save(AgentRecord(i, state=str(round_)), if_match=etags[i])
    assert {(await store.load(i)).state for i in ids} == {"3"}


# -- the append-only log ----------------------------------------------------------------

T = AgentId("cadre.team", "task-1")


def entry(seq: int, text: str = "") -> LogEntry:
    return LogEntry(str(T), seq, json.dumps({"n": seq, "text": text or f"message {seq}"}))


async def append(store, etag: str | None, *entries: LogEntry) -> str:  # type: ignore[no-untyped-def]
    """One step of the manager: a save carrying log entries, then the clear; the etag the
    next step loads (a Cosmos DB clear is a write of its own)."""
    new = await store.save(AgentRecord(T, state="{}", log=entries), if_match=etag)
    await store.clear_outbox(T, new)
    return str((await store.load(T)).etag)


async def test_saved_log_entries_read_back_in_order_by_page(store) -> None:
    etag = None
    for start in range(0, 30, 3):
        etag = await append(store, etag, *(entry(n) for n in range(start, start + 3)))
    stream = str(T)
    assert [e.seq for e in await store.read_log(stream, 0, 100)] == list(range(30))
    assert await store.read_log(stream, 5, 4) == [entry(n) for n in range(5, 9)]
    assert [e.seq for e in await store.read_log(stream, 28, 10)] == [28, 29]
    assert await store.read_log(stream, 30, 10) == []
    assert await store.read_log("cadre.team/nobody", 0, 10) == []
    assert (await store.load(T)).log == ()  # a stored record keeps no entries


async def test_log_entries_keep_multibyte_text_exactly(store) -> None:
    text = 'é€😀 \u2028 \\ " end'
    await append(store, None, entry(0, text))
    (read,) = await store.read_log(str(T), 0, 1)
    assert json.loads(read.data)["text"] == text and read == entry(0, text)


async def test_a_conflicting_save_appends_nothing(store) -> None:
    etag = await append(store, None, entry(0))
    await append(store, etag, entry(1, "the winner"))
    with pytest.raises(ConcurrencyConflict):
        await store.save(AgentRecord(T, state="{}", log=(entry(1, "the loser"),)), if_match=etag)
    assert await store.read_log(str(T), 0, 10) == [entry(0), entry(1, "the winner")]


async def test_appending_an_entry_again_keeps_the_first(store) -> None:
    etag = await append(store, None, entry(0, "first"))
    await store.save(AgentRecord(T, state="{}", log=(entry(0, "again"), entry(1))), if_match=etag)
    assert await store.read_log(str(T), 0, 10) == [entry(0, "first"), entry(1)]


async def test_logs_of_two_agents_are_separate(store) -> None:
    other = AgentId("cadre.team", "task-1/inner")
    await append(store, None, entry(0))
    await store.save(
        AgentRecord(other, state="{}", log=(LogEntry(str(other), 0, '{"inner":true}'),)),
        if_match=None,
    )
    assert await store.read_log(str(T), 0, 10) == [entry(0)]
    assert [e.data for e in await store.read_log(str(other), 0, 10)] == ['{"inner":true}']


async def test_evicted_ids_are_found_for_their_agent_only(store) -> None:
    etag = await store.save(AgentRecord(A, state="{}", evicted=("e1", "e2")), if_match=None)
    await store.save(AgentRecord(A, state="{}", evicted=("e3",)), if_match=etag)
    other = AgentId("counter", "b")
    await store.save(AgentRecord(other, state="{}", evicted=("x1",)), if_match=None)
    await _from_storage(store)
    found = [i for i in ("e1", "e2", "e3", "x1", "e4") if await store.was_evicted(A, i)]
    assert found == ["e1", "e2", "e3"]
    assert await store.was_evicted(other, "x1") and not await store.was_evicted(other, "e1")
    assert (await store.load(A)).evicted == ()  # a stored record keeps none


async def test_a_conflicting_save_evicts_nothing(store) -> None:
    etag = await store.save(AgentRecord(A, state="{}"), if_match=None)
    await store.save(AgentRecord(A, state="{}", evicted=("won",)), if_match=etag)
    with pytest.raises(ConcurrencyConflict):
        await store.save(AgentRecord(A, state="{}", evicted=("lost",)), if_match=etag)
    await _from_storage(store)
    assert await store.was_evicted(A, "won") and not await store.was_evicted(A, "lost")


# Any code point; NUL, lone surrogates, control and 4-byte characters often
TEXT = st.text(
    st.sampled_from(["\x00", "\ud800", "\udfff", "\x07", "\x7f", "\U0001d11e", "é", "a"])
    | st.characters(codec=None, exclude_categories=()),
    max_size=30,
)


async def _from_storage(store) -> None:  # type: ignore[no-untyped-def]
    """Commit what is pending and forget what is cached, so a load reads what is stored."""
    flush = getattr(store, "flush", None)
    if flush is not None and inspect.isawaitable(done := flush()):
        await done
    cache = getattr(store, "_cache", None)
    if isinstance(cache, dict):
        cache.clear()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(state_text=TEXT, log_text=TEXT, note=TEXT, raw=st.booleans())
async def test_any_unicode_is_stored_exactly_or_refused_as_unstorable(
    store, state_text: str, log_text: str, note: str, raw: bool
) -> None:  # type: ignore[no-untyped-def]
    aid = AgentId("fuzz", new_id())
    out = envelope(1).model_copy(update={"payload": {"text": note}})
    # raw: the characters themselves in the JSON text; else JSON escapes (\u0000, \ud800)
    written = json.dumps({"t": state_text}, ensure_ascii=not raw)
    entry = LogEntry(str(aid), 0, json.dumps(log_text, ensure_ascii=not raw))
    record = AgentRecord(aid, state=written, outbox=(out,), log=(entry,))
    try:
        await store.save(record, if_match=None)
        await _from_storage(store)
    except UnstorableValue as exc:
        assert exc.reason == "unstorable_value"
        await _from_storage(store)
        assert (await store.load(aid)).etag is None  # nothing was stored
        assert await store.read_log(str(aid)) == []
    else:
        loaded = await store.load(aid)
        assert state(loaded) == json.loads(written)  # (an escaped surrogate pair is one)
        assert [e.payload for e in loaded.outbox] == [{"text": note}]
        assert [e.data for e in await store.read_log(str(aid))] in (
            [entry.data],
            [json.dumps(json.loads(entry.data), ensure_ascii=False)],  # jsonb's spelling
        )
    detail = f"failed on {state_text}{note}"
    letter = DeadLetter(new_id(), b"\x00\xff", "handler_failed", detail, datetime.now(UTC))
    await store.add_dead_letter(letter)  # a dead letter is always kept, its text escaped
    assert (await store.get_dead_letter(letter.id)).body == b"\x00\xff"
