"""Publisher confirms off an agent's critical path: the worker's step pipelining.

A step commits its outbox with its state, then publishes it. The broker's confirm of that
outbox gates the *acknowledgement* of the step's message (so a crash before the confirm
redelivers the message), but it need not gate the agent's *next* step, as long as nothing
unconfirmed can be forgotten. `Confirms` wraps the store and the transport the step uses:

- ``transport.send`` starts the publishes (in order, on one channel) and returns; each
  envelope is *in flight* for its sender agent until the broker confirms it;
- ``store.save`` carries the sender's in-flight envelopes forward in the outbox it writes,
  so the stored record holds every envelope that is not yet confirmed, whatever step wrote
  it last: after a crash, the redelivered message's step publishes them again (same ids,
  receivers drop duplicates);
- ``store.load`` hides in-flight envelopes from the step, which would otherwise publish
  them again at once;
- ``store.clear_outbox`` waits until the agent has nothing in flight.

A failed confirm (a cut connection) makes the envelope *lost*: still carried in every save
and shown on load, so the agent's next step (or the redelivered message's) publishes it
again; and the sender's next publish sends its lost envelopes first, so a later envelope
never overtakes an earlier one on the way to a receiver. `settle` raises for it, and the
worker returns the message to its queue instead of acknowledging it.

With a `local` deliverer (the worker's, see `cadre.hosts._local`), an envelope for an agent
of a partition the worker owns is not published: the deliverer runs it, and its confirm is
its recipient's committed step. Everything above holds for it unchanged.

`Confirms.store` and `Confirms.transport` are the step's views (`ConfirmedStore`,
`ConfirmedTransport`); the bookkeeping stays in `Confirms`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
from collections.abc import Sequence
from typing import Protocol

from ..envelope import Envelope
from ..errors import TransportError
from ..ids import AgentId
from ..stores.base import AgentRecord, StateStore
from ._confirmed import ConfirmedStore, ConfirmedTransport

log = logging.getLogger("cadre.worker")

HANDLING: contextvars.ContextVar[Envelope | None] = contextvars.ContextVar(
    "cadre_handling", default=None
)
"""The local delivery the current task runs (set by the deliverer): its step's committed
save confirms it at once, before the rest of the step (publishing, clearing) is done."""

MAX_FAILED = 10_000
"""How many failed confirms are remembered for `Confirms.settle`."""


class Publisher(Protocol):
    """What `Confirms` needs of the broker: publishes that end at their confirms."""

    async def publish(self, envelopes: Sequence[Envelope]) -> list[asyncio.Future[None]]:
        """Start publishing, in order; one future per envelope ends at its confirm."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LocalDelivery(Protocol):
    """Runs envelopes for agents this process owns, instead of the broker."""

    def routes_here(self, envelope: Envelope) -> bool:
        """Whether `envelope` should run in this process."""
        ...

    def deliver(self, envelope: Envelope) -> asyncio.Future[None]:
        """Start it (in publish order); the task ends at its recipient's commit."""
        ...


class Confirms:
    """Tracks envelopes published but not yet confirmed (or lost), per sender agent."""

    def __init__(
        self, store: StateStore, transport: Publisher, local: LocalDelivery | None = None
    ) -> None:
        self.inner_store = store
        self.inner_transport = transport
        self.local = local
        self._seq = itertools.count()
        self._flight: dict[str, dict[str, tuple[int, Envelope, asyncio.Future[None]]]] = {}
        self._lost: dict[str, dict[str, tuple[int, Envelope]]] = {}  # failed, not republished
        # the last record this process saved per agent whose stored outbox is not empty:
        # cleared once nothing of the agent is in flight or lost
        self._latest: dict[str, tuple[AgentId, str]] = {}
        self._failed: dict[str, BaseException] = {}  # envelope id -> why, until settled
        # confirmed after a save carried them: still in the stored outbox, hidden on load
        self._confirmed: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self.store = ConfirmedStore(self)
        self.transport = ConfirmedTransport(self)

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Start publishing; each envelope is in flight for its sender until confirmed.

        A sender's lost envelopes (failed confirms) go first, so a later envelope of the
        sender never overtakes an earlier one on its way to a receiver."""
        ids = {e.id for e in envelopes}
        lost = sorted(
            entry
            for sender in {e.sender or "" for e in envelopes}
            for entry in self._lost.pop(sender, {}).values()
            if entry[1].id not in ids
        )
        batch = [env for _, env in lost] + list(envelopes)
        local = self.local
        tasks: Sequence[asyncio.Future[None]]
        if local is None:
            tasks = await self.inner_transport.publish(batch)
        else:
            here = [local.routes_here(env) for env in batch]
            away = [e for e, h in zip(batch, here, strict=True) if not h]
            remote = iter(await self.inner_transport.publish(away))
            tasks = [
                local.deliver(e) if h else next(remote) for e, h in zip(batch, here, strict=True)
            ]
        for env, task in zip(batch, tasks, strict=True):
            sender = env.sender or ""
            self._flight.setdefault(sender, {})[env.id] = (next(self._seq), env, task)
            task.add_done_callback(functools.partial(self._done, sender, env.id))
        if local is not None and len(away) < len(batch):
            # Let the local recipients' steps run up to their commits, and the group commit
            # send them, before the rest of this step (its return, its clear, its caller's
            # bookkeeping) takes the loop: that rest then runs while the disk flushes
            # their commits, instead of before (two turns: the steps, then the commit).
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    def _done(self, sender: str, envelope_id: str, task: asyncio.Future[None]) -> None:
        error = task.exception() if not task.cancelled() else asyncio.CancelledError()
        self._settle(sender, envelope_id, task, error)

    def confirm_handled(self, envelope: Envelope) -> None:
        """A local delivery's recipient has committed its step: the envelope is confirmed
        now (its task, still finishing the step, then finds nothing left to settle)."""
        sender = envelope.sender or ""
        entry = self._flight.get(sender, {}).get(envelope.id)
        if entry is not None:
            self._settle(sender, envelope.id, entry[2], None)

    def _settle(
        self,
        sender: str,
        envelope_id: str,
        task: asyncio.Future[None],
        error: BaseException | None,
    ) -> None:
        flight = self._flight.get(sender)
        entry = flight.get(envelope_id) if flight is not None else None
        if flight is None or entry is None or entry[2] is not task:
            return
        del flight[envelope_id]
        if error is None:
            confirmed = self._confirmed.setdefault(sender, set())
            confirmed.add(envelope_id)
            if len(confirmed) > MAX_FAILED or len(self._confirmed) > MAX_FAILED:
                # agents that never save again: forget the oldest (the outbox clear that
                # follows the confirm removes their envelopes from the store anyway)
                del self._confirmed[next(iter(self._confirmed))]
        else:
            log.warning("%s was not delivered (it stays in the outbox): %s", envelope_id, error)
            self._failed[envelope_id] = error
            while len(self._failed) > MAX_FAILED:
                del self._failed[next(iter(self._failed))]
            # the stored outbox keeps it: no clear until it is re-sent and confirmed
            self._lost.setdefault(sender, {})[envelope_id] = (entry[0], entry[1])
        if flight:
            return
        del self._flight[sender]
        if sender not in self._lost:  # all confirmed: clear what this process last stored
            self._clear_latest(sender)

    def _clear_latest(self, sender: str) -> None:
        latest = self._latest.pop(sender, None)
        if latest is not None:
            clear = asyncio.ensure_future(self.inner_store.clear_outbox(*latest))
            self._tasks.add(clear)
            clear.add_done_callback(self._tasks.discard)

    def in_flight(self, agent: str) -> dict[str, tuple[int, Envelope, asyncio.Future[None]]]:
        """The agent's envelopes awaiting their confirm, in publish order."""
        return self._flight.get(agent, {})

    def lost_senders(self) -> list[str]:
        """The agents with envelopes whose publish (or local delivery) failed."""
        return [agent for agent, lost in self._lost.items() if lost and agent]

    def unconfirmed(self, agent: str) -> list[Envelope]:
        """The agent's envelopes in flight or lost, oldest first: its outbox must keep them."""
        entries = [(seq, env) for seq, env, _ in self.in_flight(agent).values()]
        entries += self._lost.get(agent, {}).values()
        return [env for _, env in sorted(entries, key=lambda e: e[0])]

    async def settle(self, envelopes: Sequence[Envelope]) -> None:
        """Wait for the confirms of `envelopes`; raise `TransportError` if one failed."""
        waiting = []
        for env in envelopes:
            entry = self.in_flight(env.sender or "").get(env.id)
            if entry is not None:
                waiting.append(entry[2])
        results = await asyncio.gather(*waiting, return_exceptions=True) if waiting else []
        failed = [r for r in results if isinstance(r, BaseException)]
        failed += [e for e in (self._failed.pop(env.id, None) for env in envelopes) if e]
        if failed:
            raise TransportError(f"RabbitMQ did not confirm {len(failed)} publish(es): {failed[0]}")

    async def close(self) -> None:
        """Wait for every confirm and deferred outbox clear under way."""
        pending = [t for flight in self._flight.values() for _, _, t in flight.values()]
        await asyncio.gather(*pending, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the step's view of the store --------------------------------------------------------

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """The stored record with its in-flight (and confirmed) envelopes hidden; lost ones
        are shown, so the step publishes them again first."""
        record = await self.inner_store.load(agent_id)
        if record.outbox:
            key = str(agent_id)
            flying = self.in_flight(key)
            confirmed = self._confirmed.get(key)
            if flying or confirmed:
                outbox = tuple(
                    e
                    for e in record.outbox
                    if e.id not in flying and (confirmed is None or e.id not in confirmed)
                )
                record = record.with_outbox(outbox)
        return record

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Save with the agent's unconfirmed envelopes carried in front of its outbox."""
        key = str(record.agent_id)
        new_count = len(record.outbox)
        unconfirmed = self.unconfirmed(key)
        if unconfirmed:
            new = {e.id for e in record.outbox}
            carried = tuple(env for env in unconfirmed if env.id not in new)
            record = record.with_outbox((*carried, *record.outbox))
        dropped = self._confirmed.pop(key, None)  # not carried: gone once saved
        try:
            etag = await self.inner_store.save(record, if_match=if_match)
        except BaseException:
            if dropped:  # the stored outbox may still hold them
                self._confirmed.setdefault(key, set()).update(dropped)
            raise
        handling = HANDLING.get()
        if handling is not None:
            self.confirm_handled(handling)
        if record.outbox:
            self._latest[key] = (record.agent_id, etag)
            if not new_count and not self.unconfirmed(key):
                # it stored only carried envelopes, all confirmed during the save: nothing
                # else would clear them (a step with new envelopes clears after sending)
                self._clear_latest(key)
        return etag

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Clear the stored outbox once nothing of the agent is in flight or lost (else
        the last confirm, or a later step, clears it)."""
        key = str(agent_id)
        if key in self._lost or self.in_flight(key):
            return
        latest = self._latest.get(key)
        if latest is not None and latest[1] == etag:
            del self._latest[key]
        await self.inner_store.clear_outbox(agent_id, etag)
