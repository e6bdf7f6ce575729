"""The in-process transport: per-agent FIFO mailboxes in this process, optionally journaled.

Without a journal nothing survives the process (tests, benchmarks). With the SQLite
store's journal every pending envelope and timer is on disk before `send` returns, and
`start()` after a restart puts them back in their mailboxes in their original order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from ..envelope import Envelope
from ..errors import EnvelopeInvalid
from .base import Delivery


class Journal(Protocol):
    """Durable copy of the queue (see `cadre.stores.sqlite.SQLiteJournal`)."""

    def add(self, envelopes: Iterable[Envelope]) -> None: ...
    def update(self, envelope: Envelope) -> None: ...
    def remove(self, envelope_id: str) -> None: ...
    def flush(self) -> None: ...
    def pending(self) -> list[Envelope]: ...


class InProcessTransport:
    """Transport and consumer in one: one mailbox per recipient, one envelope in flight each.

    Different recipients are served round-robin; an envelope being retried keeps its
    recipient's place, so later envelopes for that recipient wait behind it.
    """

    def __init__(self, journal: Journal | None = None) -> None:
        self._journal = journal
        self._mailboxes: dict[str, deque[Envelope]] = {}
        self._ready: deque[str] = deque()
        self._busy: set[str] = set()
        self._queued: set[str] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle_waiters: list[tuple[bool, asyncio.Future[None]]] = []
        self._timers: list[tuple[float, int, Envelope]] = []
        self._timer_handle: asyncio.TimerHandle | None = None
        self._seq = itertools.count()
        self._started = False

    async def start(self) -> None:
        """Reload what the journal holds (once)."""
        if self._started:
            return
        self._started = True
        if self._journal is not None:
            for env in self._journal.pending():
                self._queued.add(env.id)
                self._route(env, restored=True)

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Queue envelopes for their recipients (ids already queued are kept once)."""
        fresh = []
        for env in envelopes:
            if env.recipient is None:
                raise EnvelopeInvalid(f"envelope {env.id} has no recipient")
            if env.id not in self._queued:
                self._queued.add(env.id)
                fresh.append(env)
        if not fresh:
            return
        if self._journal is not None:
            self._journal.add(fresh)
        for env in fresh:
            self._route(env, restored=False)

    async def receive(self) -> Delivery:
        """The next envelope of a recipient that has nothing in flight."""
        while not self._ready:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # this consumer is going away: pass its wake-up on
                raise
        recipient = self._ready.popleft()
        self._busy.add(recipient)
        return Delivery(self._mailboxes[recipient].popleft())

    async def ack(self, delivery: Delivery) -> None:
        """Forget the envelope and free its recipient for the next one."""
        env = delivery.envelope
        if self._journal is not None:
            self._journal.remove(env.id)
        self._queued.discard(env.id)
        self._release(env.recipient)  # type: ignore[arg-type]

    async def retry(self, delivery: Delivery, delay: float) -> None:
        """Put the envelope back at its recipient's head, due after `delay` seconds."""
        env = delivery.envelope
        again = env.model_copy(
            update={
                "attempt": env.attempt + 1,
                "not_before": datetime.now(UTC) + timedelta(seconds=delay),
            }
        )
        if self._journal is not None:
            self._journal.update(again)
        recipient: str = env.recipient  # type: ignore[assignment]
        self._mailboxes[recipient].appendleft(again)
        asyncio.get_running_loop().call_later(delay, self._release, recipient)

    def flush(self) -> None:
        """Make everything accepted so far durable (commits the journal)."""
        if self._journal is not None:
            self._journal.flush()

    def pending(self) -> int:
        """Envelopes queued or in flight, not counting timers that are not due."""
        return sum(len(m) for m in self._mailboxes.values()) + len(self._busy)

    def timers(self) -> int:
        """Scheduled envelopes not yet due."""
        return len(self._timers)

    async def wait_idle(self, *, include_timers: bool = False) -> None:
        """Return once nothing is queued or in flight (and, optionally, no timer is waiting)."""
        if self._is_idle(include_timers):
            self.flush()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append((include_timers, waiter))
        await waiter

    async def close(self) -> None:
        """Stop the timer; queued envelopes stay in the journal."""
        self.flush()
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None

    # -- internals -------------------------------------------------------------------

    def _route(self, env: Envelope, *, restored: bool) -> None:
        due = env.not_before.timestamp() if env.not_before is not None else 0.0
        recipient: str = env.recipient  # type: ignore[assignment]
        if due > time.time():
            if restored and env.attempt > 1:
                # A retry that was waiting when the process stopped keeps its place.
                self._enqueue(env, blocked_for=due - time.time())
            else:
                heapq.heappush(self._timers, (due, next(self._seq), env))
                self._arm_timer()
            return
        if recipient in self._mailboxes or recipient in self._busy:
            self._mailboxes.setdefault(recipient, deque()).append(env)
            return
        self._enqueue(env)

    def _enqueue(self, env: Envelope, blocked_for: float = 0.0) -> None:
        recipient: str = env.recipient  # type: ignore[assignment]
        box = self._mailboxes.get(recipient)
        if box is None:
            box = self._mailboxes[recipient] = deque()
        box.append(env)
        if recipient in self._busy:
            return
        if blocked_for > 0:
            self._busy.add(recipient)
            asyncio.get_running_loop().call_later(blocked_for, self._release, recipient)
            return
        if len(box) == 1:
            self._ready.append(recipient)
            self._wake()

    def _release(self, recipient: str) -> None:
        self._busy.discard(recipient)
        box = self._mailboxes.get(recipient)
        if box:
            self._ready.append(recipient)
            self._wake()
        else:
            self._mailboxes.pop(recipient, None)
            self._check_idle()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _arm_timer(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
        if not self._timers:
            self._timer_handle = None
            return
        delay = max(0.0, self._timers[0][0] - time.time())
        self._timer_handle = asyncio.get_running_loop().call_later(delay, self._fire_timers)

    def _fire_timers(self) -> None:
        self._timer_handle = None
        now = time.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, env = heapq.heappop(self._timers)
            self._enqueue(env)
        self._arm_timer()
        self._check_idle()

    def _is_idle(self, include_timers: bool) -> bool:
        if self._mailboxes or self._busy:
            return False
        return not (include_timers and self._timers)

    def _check_idle(self) -> None:
        if not self._mailboxes and not self._busy:
            self.flush()  # idle: nothing more is coming to batch with
        if not self._idle_waiters:
            return
        still = []
        for include_timers, waiter in self._idle_waiters:
            if waiter.done():
                continue
            if self._is_idle(include_timers):
                waiter.set_result(None)
            else:
                still.append((include_timers, waiter))
        self._idle_waiters = still
