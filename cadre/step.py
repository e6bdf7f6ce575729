"""The agent step: the one thing every host runs for every envelope.

    record = load(recipient)                      state + etag + seen ids + outbox
    publish(record.outbox)                        a crashed step's replies go out first
    if envelope.id in record.seen: clear; return  redelivery: no second effect
    if created <= floor and was_evicted(id): ...  the same for one that left `seen` since
    agent  = create(type, migrate(record.state))  older state versions migrated on load
    await agent.dispatch(message, ctx)            outgoing messages collect in ctx.outbox
    etag   = save(record', if_match=record.etag)  state + seen + outbox + log entries
    publish(outbox); clear_outbox(etag)           ids derived from envelope.id: idempotent

A crash between any two lines loses nothing and doubles nothing once the envelope is
redelivered: before the save nothing happened; after it, the envelope is in `seen` and
its outbox is re-published with the same ids, which receivers drop as duplicates. The
entries the handler appended to its agent's log (`ctx.append_log`, numbered by the agent)
are in the log once the save returns: the store writes them with the record, atomically
or (Cosmos DB) inside the record first, and keeps the first copy of any (stream, seq).
Failures are not handled here: `cadre.processing` retries and dead-letters around it.

Duplicates are dropped however late they come. `seen` keeps the newest ids (at most
`seen_limit`); a save that would keep more moves the oldest quarter to the store for good
(`AgentRecord.evicted`, written like log entries) and sets the floor to the newest
`created_at` handled so far. Every copy of an envelope has the same id and `created_at`
(redeliveries, re-published outboxes, retries and redrives copy them), so an envelope
handled before is either in `seen` or evicted with a `created_at` at most the floor: one
that is in neither and is newer than the floor is new without asking the store, and only
one at or below the floor (a late or reordered arrival) costs a `was_evicted` lookup. The
floor and the newest time are kept as `seen`'s first element (a tab, which no envelope id
holds, then both times).

`Step.run_many` runs several envelopes for one agent, in order, as one step: one load, the
handlers one after another (each on a fresh agent whose state went through JSON, as if it
had been loaded), and one save holding every id and every outgoing envelope. It is what
running them one by one would have stored, in one write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from .context import Context
from .envelope import Envelope
from .errors import EnvelopeInvalid
from .ids import AgentId
from .messages import ContractRegistry, contracts
from .migrations import load_state, state_version
from .registry import Registry, default_registry
from .settings import DEFAULT_SEEN_LIMIT
from .stores.base import AgentRecord, LogEntry, StateStore
from .transports.base import Transport

if TYPE_CHECKING:
    from pydantic import BaseModel


class Outcome(StrEnum):
    """What a step did."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome and the envelopes the step published."""

    outcome: Outcome
    published: tuple[Envelope, ...] = ()


_HANDLED_NOTHING = StepResult(Outcome.HANDLED)


class Step:
    """Runs one envelope through its recipient agent (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        transport: Transport,
        *,
        registry: Registry | None = None,
        contracts: ContractRegistry = contracts,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
    ) -> None:
        self.store = store
        self.transport = transport
        self.registry = registry or default_registry
        self.contracts = contracts
        if seen_limit < 1:
            raise ValueError("seen_limit must be at least 1")
        self.seen_limit = seen_limit
        self._item_bytes: int | None = store.max_item_bytes

    async def __call__(self, envelope: Envelope) -> StepResult:
        """Handle `envelope` once; raises `DeliveryError`s and the handler's exceptions."""
        recipient = envelope.recipient_id
        if recipient is None:
            raise EnvelopeInvalid(f"envelope {envelope.id} has no recipient")
        agent_type = self.registry.get(recipient.type)
        message = self.contracts.decode(envelope.message, envelope.version, envelope.payload)
        agent_type.cls.handler_for(type(message), agent_type.name)

        record = await self._load(recipient)
        if envelope.id in record.seen:
            return await self._duplicate(record)
        window = Window(record.seen)
        if window.older(envelope) and await self.store.was_evicted(recipient, envelope.id):
            return await self._duplicate(record)

        state_model = agent_type.cls.State
        agent = agent_type.create(recipient, load_state(agent_type.name, state_model, record))
        ctx = Context(envelope, recipient, self.registry, max_item_bytes=self._item_bytes)
        await agent.dispatch(message, ctx)

        outbox = tuple(ctx.outbox)
        window.add(envelope)
        state = agent.state.model_dump_json()
        log = tuple(ctx.log)
        await self._commit(record, state, state_model, window, outbox, log)
        return StepResult(Outcome.HANDLED, outbox) if outbox else _HANDLED_NOTHING

    async def run_many(self, envelopes: Sequence[Envelope]) -> list[StepResult]:
        """Handle envelopes for one agent, in order, as one step (see the module docstring).

        Every result carries the whole step's outgoing envelopes. Raises what `__call__`
        raises; if a handler fails, nothing is saved (run them one by one then). At most
        ``seen_limit`` envelopes: one step's ids fit `seen`."""
        if not envelopes:
            return []
        if len(envelopes) > self.seen_limit:
            raise ValueError(f"at most seen_limit ({self.seen_limit}) envelopes in one step")
        recipient = envelopes[0].recipient_id
        if recipient is None or any(e.recipient_id != recipient for e in envelopes):
            raise EnvelopeInvalid("the envelopes of one step must have one recipient")
        agent_type = self.registry.get(recipient.type)
        messages = []
        for envelope in envelopes:
            message = self.contracts.decode(envelope.message, envelope.version, envelope.payload)
            agent_type.cls.handler_for(type(message), agent_type.name)
            messages.append(message)

        record = await self._load(recipient)
        window = Window(record.seen)
        known = set(window.ids)
        for envelope in envelopes:
            stale = envelope.id not in known and window.older(envelope)
            if stale and await self.store.was_evicted(recipient, envelope.id):
                known.add(envelope.id)
        if all(e.id in known for e in envelopes):
            return [await self._duplicate(record)] * len(envelopes)

        state_model = agent_type.cls.State
        state = load_state(agent_type.name, state_model, record)
        outcomes, outbox, log, state_json = [], [], [], record.state
        for envelope, message in zip(envelopes, messages, strict=True):
            if envelope.id in known:
                outcomes.append(Outcome.DUPLICATE)
                continue
            if state_json is not record.state:  # as a step of its own would have loaded it
                state = state_model.model_validate_json(state_json)  # type: ignore[arg-type]
            agent = agent_type.create(recipient, state)
            ctx = Context(envelope, recipient, self.registry, max_item_bytes=self._item_bytes)
            await agent.dispatch(message, ctx)
            state_json = agent.state.model_dump_json()
            outbox += ctx.outbox
            log += ctx.log
            window.add(envelope)
            known.add(envelope.id)
            outcomes.append(Outcome.HANDLED)

        published = tuple(outbox)
        await self._commit(record, state_json, state_model, window, published, tuple(log))
        return [StepResult(outcome, published) for outcome in outcomes]

    async def flush_outbox(self, agent_id: AgentId) -> tuple[Envelope, ...]:
        """Publish the outbox a crash left stored for `agent_id`, then clear it; what was
        published (a worker's outbox relay asks the agent's owner to do this)."""
        record = await self.store.load(agent_id)
        if not record.outbox:
            return ()
        await self.transport.send(record.outbox)
        await self.store.clear_outbox(agent_id, record.etag)  # type: ignore[arg-type]
        return record.outbox

    async def _load(self, recipient: AgentId) -> AgentRecord:
        """The record, its stored outbox (what a crashed step left) published first."""
        record = await self.store.load(recipient)
        if record.outbox:
            await self.transport.send(record.outbox)
        return record

    async def _duplicate(self, record: AgentRecord) -> StepResult:
        """A redelivery: nothing to do but clear the outbox `_load` published."""
        if record.outbox:
            await self.store.clear_outbox(record.agent_id, record.etag)  # type: ignore[arg-type]
        return StepResult(Outcome.DUPLICATE, record.outbox)

    async def _commit(
        self,
        read: AgentRecord,
        state: str | None,
        state_model: type[BaseModel],
        window: Window,
        outbox: tuple[Envelope, ...],
        log: tuple[LogEntry, ...] = (),
    ) -> None:
        """The one conditional write (on the version `read` had), then publish and clear."""
        recipient = read.agent_id
        seen, evicted = window.stored(self.seen_limit)
        record = AgentRecord(
            recipient, state, state_version(state_model), seen, outbox, log=log, evicted=evicted
        )
        etag = await self.store.save(record, if_match=read.etag)
        if outbox:
            await self.transport.send(outbox)
        if outbox or log:
            await self.store.clear_outbox(recipient, etag)


class Window:
    """An agent's `seen` as `Step` keeps it: the newest handled ids, the floor (the newest
    `created_at` handled when ids were last evicted; -inf: never) and the newest
    `created_at` handled (see the module docstring)."""

    __slots__ = ("floor", "ids", "newest")

    def __init__(self, seen: tuple[str, ...]) -> None:
        if seen and seen[0][:1] == "\t":
            _, floor, newest = seen[0].split("\t")
            self.ids, self.floor, self.newest = seen[1:], float(floor), float(newest)
        else:  # a new agent, or one written before floors: its ids were handled by now
            self.ids, self.floor = seen, -math.inf
            self.newest = time.time() if seen else -math.inf

    def older(self, envelope: Envelope) -> bool:
        """Whether `envelope` may have been evicted (so only the store can tell)."""
        return envelope.created_at.timestamp() <= self.floor

    def add(self, envelope: Envelope) -> None:
        """Remember a handled envelope."""
        self.ids = (*self.ids, envelope.id)
        stamp = envelope.created_at.timestamp()
        if stamp > self.newest:
            self.newest = stamp

    def stored(self, limit: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """`seen` to store and the ids to evict: when there are over `limit` ids, the oldest
        go, leaving three quarters of `limit` (one write of ids per quarter of steps)."""
        ids = self.ids
        evicted: tuple[str, ...] = ()
        if len(ids) > limit:
            cut = len(ids) - (limit - limit // 4)
            ids, evicted = ids[cut:], ids[:cut]
            self.floor = self.newest
        return (f"\t{self.floor!r}\t{self.newest!r}", *ids), evicted
