"""The state store port: agent records (state + seen ids + outbox), the ids that left
`seen`, agents' append-only logs, and dead letters."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from ..envelope import Envelope
from ..errors import UnstorableValue
from ..ids import AgentId


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of an agent's append-only log: number `seq` (from 0, no gaps) of `stream`
    (the writing agent's id as text), `data` its JSON text. A team's transcript is the log
    of its manager (stream ``cadre.team/<task id>``)."""

    stream: str
    seq: int
    data: str


@dataclass(slots=True)  # read-only by convention; frozen costs 4x per construction
class AgentRecord:
    """Everything stored for one agent instance, written in one conditional write.

    `state` is the JSON text of the agent's state model (None before the first step; a
    store may give back the same JSON value in another formatting: PostgreSQL's jsonb),
    `state_version` the version of the state model that wrote it, `seen` the ids of the most
    recently handled envelopes (oldest first), `outbox` the envelopes of the last step that
    may not have been published yet. `log` holds the log entries the step appends: what a
    step wrote is in the log once `save` returns (see `StateStore.save`), so a loaded
    record's `log` is empty. `evicted` holds the ids this write moves out of `seen`: the
    store keeps them for good, with the same guarantee as log entries, and `was_evicted`
    finds them (a loaded record's `evicted` is empty too). `etag` is the store's version tag
    of what was read; None means the record does not exist yet.
    """

    agent_id: AgentId
    state: str | None = None
    state_version: int = 1
    seen: tuple[str, ...] = ()
    outbox: tuple[Envelope, ...] = ()
    etag: str | None = None
    log: tuple[LogEntry, ...] = ()
    evicted: tuple[str, ...] = ()

    def with_outbox(self, outbox: tuple[Envelope, ...]) -> AgentRecord:
        """A copy with another outbox (`dataclasses.replace` costs 3x on the step's path)."""
        return AgentRecord(
            self.agent_id,
            self.state,
            self.state_version,
            self.seen,
            outbox,
            self.etag,
            self.log,
            self.evicted,
        )

    def with_etag(self, etag: str | None) -> AgentRecord:
        """A copy with another etag (and no log entries or evicted ids: a stored record
        keeps none)."""
        return AgentRecord(
            self.agent_id, self.state, self.state_version, self.seen, self.outbox, etag
        )


def seen_text(seen: tuple[str, ...]) -> str:
    """The seen ids as the SQL stores keep them: one string, space-separated (an envelope
    id has no whitespace), which costs a fraction of a JSON array to write and read."""
    return " ".join(seen)


def evicted_text(ids: tuple[str, ...]) -> str:
    """The ids one save evicted as the SQL stores keep them: one row per save, the ids
    between spaces (`` a b c ``), so `` <id> `` occurs in it exactly when the id is one."""
    return " " + " ".join(ids) + " "


def evicted_needle(envelope_id: str) -> str:
    """What occurs in an `evicted_text` exactly when `envelope_id` is one of its ids."""
    return f" {envelope_id} "


def seen_ids(text: str | None) -> tuple[str, ...]:
    """The seen ids `seen_text` wrote."""
    return tuple(text.split(" ")) if text else ()


def refuse_surrogates(record: AgentRecord) -> list[str]:
    """Raise `UnstorableValue` when a text of `record` has a lone surrogate (it has no UTF-8
    form, so a store that writes UTF-8 would fail on it, perhaps only at its next commit);
    else the outbox's envelopes as JSON (`outbox_json`'s parts: a store may keep them)."""
    texts = [record.state or "", "".join(record.seen), *(e.data for e in record.log)]
    texts += record.evicted
    for text in texts:
        if not text.isascii():
            _utf8(text, record.agent_id)
    return _envelope_texts(record)


def record_outbox_json(record: AgentRecord) -> str:
    """`outbox_json` of the record's outbox, or `UnstorableValue` when a message in it has
    text with no UTF-8 form (a lone surrogate)."""
    return "[" + ",".join(_envelope_texts(record)) + "]"


def _envelope_texts(record: AgentRecord) -> list[str]:
    """Each envelope of the outbox as `Envelope.to_bytes` writes it (text), or
    `UnstorableValue` for one with text that has no UTF-8 form."""
    try:
        return [e.model_dump_json(exclude_none=True) for e in record.outbox]
    except ValueError as exc:  # pydantic's serialization error
        raise UnstorableValue(
            f"{record.agent_id}: an outgoing message has text with no UTF-8 form ({exc}); "
            "nothing was stored"
        ) from None


def _utf8(text: str, agent_id: AgentId) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise UnstorableValue(
            f"{agent_id}: the text has a lone surrogate at position {exc.start}, which no "
            "UTF-8 store can hold; nothing was stored"
        ) from None


def letter_text(text: str) -> str:
    """`text` as every store can hold it: U+0000 and lone surrogates written as escapes
    (``\\u0000``, ``\\ud800``), so a dead letter about unstorable text can be kept."""
    if text.isascii() and "\x00" not in text:
        return text
    text = text.replace("\x00", "\\u0000")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def storable_letter(letter: DeadLetter) -> DeadLetter:
    """`letter` with every text `letter_text` made storable (the body is bytes already)."""

    def opt(text: str | None) -> str | None:
        return None if text is None else letter_text(text)

    return DeadLetter(
        id=letter_text(letter.id),
        body=letter.body,
        reason=letter_text(letter.reason),
        detail=letter_text(letter.detail),
        failed_at=letter.failed_at,
        attempts=letter.attempts,
        agent=opt(letter.agent),
        message=opt(letter.message),
        task_id=opt(letter.task_id),
        extra=letter_extra(letter.extra),  # type: ignore[arg-type]
    )


def letter_extra(value: object) -> object:
    """A dead letter's `extra` with every string in it made storable by `letter_text`."""
    if isinstance(value, str):
        return letter_text(value)
    if isinstance(value, dict):
        return {letter_text(str(k)): letter_extra(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [letter_extra(v) for v in value]
    return value


def outbox_json(outbox: tuple[Envelope, ...]) -> str:
    """An outbox as one JSON array (``[]`` when empty), each envelope as `Envelope.to_bytes`
    writes it: the form the SQL stores keep."""
    return "[" + ",".join(e.model_dump_json(exclude_none=True) for e in outbox) + "]"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An envelope that could not be handled, with why, and its original bytes."""

    id: str
    body: bytes
    reason: str
    detail: str
    failed_at: datetime
    attempts: int = 1
    agent: str | None = None
    message: str | None = None
    task_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class StateStore(Protocol):
    """Where agents' records and dead letters live.

    Invariants every adapter keeps (the conformance suite in
    ``tests/conformance/test_state_store.py`` proves them):
    - `load` of an agent never stored returns an empty record with ``etag=None``;
    - `save` is one atomic conditional write: it succeeds only when the stored etag equals
      `if_match` (``None``: only when no record exists) and raises `ConcurrencyConflict`
      otherwise, changing nothing; it returns the new etag;
    - `save` appends `record.log` to the log: atomically with the record (a store with
      transactions), or (a store without multi-item transactions: Cosmos DB) kept inside
      the record, appended right after it, and appended again by every `load` that finds
      them still there, until `clear_outbox` drops them. Either way, once `save` returned
      no entry can be lost, and appending an entry whose (stream, seq) is in the log
      already keeps the first: no entry is doubled;
    - `save` records `record.evicted` with the same guarantee (with the record, or kept in
      it until recorded), and `was_evicted` answers True for every id a save of that agent
      recorded, for good, and False for any other (a read of that agent's evicted ids:
      `Step` asks only for late arrivals);
    - `read_log` returns a stream's entries in `seq` order, from `start`, at most `limit`:
      its cost depends on `limit`, not on the length of the log;
    - `clear_outbox` empties the outbox of the record written with `etag`, and does nothing
      (without raising) when the record has moved on since;
    - a record or entry larger than `max_item_bytes` (when not None) is refused with
      `RecordTooLarge`, naming the size and the limit, and changes nothing;
    - any Unicode text is stored and read back exactly, except what the store cannot hold
      (U+0000 in PostgreSQL; a lone surrogate, which is not UTF-8, in every store that writes
      UTF-8): that record or entry is refused with `UnstorableValue` and changes nothing;
    - dead letters are kept until deleted, listed newest first; their text is stored as
      `letter_text` makes it storable, so dead-lettering never fails on the text.
    """

    max_item_bytes: int | None
    """The largest record or log entry this store can keep, in bytes (None: no limit that a
    task could reach). A team keeps each transcript entry under a quarter of it."""

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """Read one agent's record (a point read)."""
        ...

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Write the whole record if the stored etag is `if_match`; return the new etag."""
        ...

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the outbox written with `etag`, once it has been published."""
        ...

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """Entries of `stream` with ``seq >= start``, in order, at most `limit`."""
        ...

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """Whether a save of `agent_id` recorded `envelope_id` in `AgentRecord.evicted`."""
        ...

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a dead letter; adding the same id twice keeps one."""
        ...

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first."""
        ...

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter; `NotFound` when there is none with that id."""
        ...

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove a dead letter (after a redrive); `NotFound` when absent."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
