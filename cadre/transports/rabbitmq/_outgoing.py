"""Publishes gathered per loop iteration: the due envelopes of every `publish` made in one
iteration of the event loop go to each partition queue together, in as few AMQP messages as
the batch limits allow (`MAX_BATCH` envelopes, `MAX_BATCH_BYTES`).

Many publishes under way at once (a server's concurrent requests, a client keeping a window
of publishes in flight, a worker's steps committing together) then cost one publish, one
confirm, one delivery and one ack per queue and iteration instead of one each. Order is
kept: a queue's envelopes leave in the order they were given, in the order of the calls,
and one iteration's messages are written before the next one's. The price is one loop
iteration before the first frame is written.

Each call gets one future per queue it wrote to, resolved when every AMQP message that
carries its envelopes is confirmed (failed with the first refusal).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from ...envelope import Envelope
from ._topology import BATCH_CONTENT_TYPE

MAX_BATCH = 100
MAX_BATCH_BYTES = 256 * 1024

Items = list[tuple[Envelope, bytes]]


class _Group:
    """One call's envelopes for one queue: its future, and the messages not yet confirmed."""

    __slots__ = ("future", "items", "left")

    def __init__(self, future: asyncio.Future[None], items: Items) -> None:
        self.future, self.items, self.left = future, items, 0


class Outgoing:
    """Gathers `add`ed envelopes per queue and publishes them at the end of the iteration
    through `publish(queue, body, content_type)`."""

    def __init__(self, publish: Callable[[str, bytes, str], Awaitable[None]]) -> None:
        self._publish = publish
        self._pending: dict[str, list[_Group]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def add(self, queue: str, items: Items) -> asyncio.Future[None]:
        """Publish `items` (envelopes and their bytes, in order) to `queue` soon; the
        future ends when all are confirmed."""
        loop = asyncio.get_running_loop()
        group = _Group(loop.create_future(), items)
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.setdefault(queue, []).append(group)
        return group.future

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for queue, groups in pending.items():
            for chunk, members in _chunks(groups):
                if len(chunk) == 1:
                    body, content_type = chunk[0], "application/json"
                else:
                    body, content_type = b"\n".join(chunk), BATCH_CONTENT_TYPE
                task = asyncio.ensure_future(self._publish(queue, body, content_type))
                for group in members:
                    group.left += 1
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._confirmed, members))

    def _confirmed(self, members: list[_Group], task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        for group in members:
            group.left -= 1
            if group.future.done():
                continue
            if task.cancelled():  # the loop is closing: so are the sends it carried
                group.future.cancel()
            elif error is not None:
                group.future.set_exception(error)
            elif not group.left:
                group.future.set_result(None)


def _chunks(groups: list[_Group]) -> list[tuple[list[bytes], list[_Group]]]:
    """The bodies of `groups` in order, cut into messages of at most MAX_BATCH envelopes
    and (but for a lone larger envelope) MAX_BATCH_BYTES, each with the groups it carries."""
    chunks: list[tuple[list[bytes], list[_Group]]] = []
    size = 0
    for group in groups:
        for _, body in group.items:
            if not chunks or len(chunks[-1][0]) >= MAX_BATCH or size + len(body) > MAX_BATCH_BYTES:
                chunks.append(([], []))
                size = 0
            bodies, members = chunks[-1]
            bodies.append(body)
            if not members or members[-1] is not group:
                members.append(group)
            size += len(body) + 1
    return chunks
