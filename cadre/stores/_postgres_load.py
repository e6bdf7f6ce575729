"""Loads gathered per loop iteration: the records that steps ask for in one iteration of the
event loop and that the store's cache does not hold are read with one statement.

A burst of first steps (a fan-out to agents that are new, the agents of many new tasks)
otherwise reads its records one after another, each taking a pooled connection (and its
liveness check) and a round trip while the loop is busy with the burst itself. A lone load
keeps the one-row statement; several go as one join of the primary key with the ids.

Each caller gets a future of its own (a caller cancelled while waiting cancels nothing
else); a failed read fails every load it carried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..ids import AgentId

Row = tuple[Any, ...]
"""``(state, state_version, seen, outbox, version)`` of one stored record."""


class GroupLoad:
    """Gathers `load` calls and reads them through `read(agents)`, which returns the rows
    found by agent (agents not stored are absent)."""

    def __init__(self, read: Callable[[Sequence[AgentId]], Awaitable[dict[AgentId, Row]]]):
        self._read = read
        self._pending: dict[AgentId, list[asyncio.Future[Row | None]]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def load(self, agent_id: AgentId) -> asyncio.Future[Row | None]:
        """The agent's stored row (None: not stored), read at the end of this iteration
        together with the other loads asked for in it."""
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._flush)
        future: asyncio.Future[Row | None] = loop.create_future()
        self._pending.setdefault(agent_id, []).append(future)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[AgentId, list[asyncio.Future[Row | None]]]) -> None:
        try:
            rows = await self._read(list(batch))
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the loads
            for futures in batch.values():
                for future in futures:
                    future.cancel()
            raise
        for agent, futures in batch.items():
            row = rows.get(agent)
            for future in futures:
                if not future.done():
                    future.set_result(row)
