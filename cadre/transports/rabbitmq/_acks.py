"""Acknowledgements in runs: one ``basic.ack(multiple=True)`` for many settled deliveries.

A channel numbers its deliveries 1, 2, 3, ... Once every delivery up to tag T has been
settled by this worker, one ack with ``multiple=True`` and tag T covers them all. Only a
run of *consecutive* tags this worker has settled is acknowledged that way, so a delivery
the worker never saw or has not finished (a gap) is never covered; a settled delivery
above a gap is acknowledged on its own at once, so a slow step never holds back the acks
of the others. The acks of one loop iteration are gathered before any is sent.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

log = logging.getLogger("cadre.worker")


class _Run:
    """The settled tags of one channel not yet covered by a multiple ack."""

    __slots__ = ("acked_to", "individually", "pending", "scheduled")

    def __init__(self) -> None:
        self.acked_to = 0  # every tag <= acked_to is settled and acknowledged
        self.pending: set[int] = set()  # settled, to be acknowledged
        self.individually: set[int] = set()  # settled and acknowledged (or nacked) alone
        self.scheduled = False


class AckRuns:
    """Collects ``ack(message)`` calls and sends them as runs (see the module docstring)."""

    def __init__(self) -> None:
        self._runs: weakref.WeakKeyDictionary[Any, _Run] = weakref.WeakKeyDictionary()
        self._sending: set[asyncio.Future[Any]] = set()

    def ack(self, message: Any) -> None:
        """Acknowledge `message` soon (in this loop iteration's run)."""
        channel = message.channel  # raises when the channel is closed: redelivered anyway
        run = self._runs.get(channel)
        if run is None:
            run = self._runs[channel] = _Run()
        run.pending.add(message.delivery_tag)
        if not run.scheduled:
            run.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush, channel, run)

    def settled_alone(self, message: Any) -> None:
        """Record a delivery settled outside this class (a nack): a run may pass over it."""
        try:
            channel = message.channel
        except Exception:
            return
        run = self._runs.get(channel)
        if run is None:
            run = self._runs[channel] = _Run()
        run.individually.add(message.delivery_tag)

    def _flush(self, channel: Any, run: _Run) -> None:
        run.scheduled = False
        top = 0
        while True:  # walk the consecutive settled tags
            nxt = run.acked_to + 1
            if nxt in run.pending:
                run.pending.discard(nxt)
                top = nxt
            elif nxt in run.individually:
                run.individually.discard(nxt)
            else:
                break
            run.acked_to = nxt
        sends = []
        if top:
            sends.append(channel.basic_ack(top, multiple=True))
        for tag in sorted(run.pending):  # above a gap: alone, now
            sends.append(channel.basic_ack(tag))
            run.individually.add(tag)
        run.pending.clear()
        for send in sends:
            task = asyncio.ensure_future(send)
            self._sending.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[Any]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("an acknowledgement failed (the broker redelivers): %s", task.exception())

    async def wait(self) -> None:
        """Send what is gathered and wait until every ack is written."""
        await asyncio.sleep(0)  # let scheduled runs flush
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
