"""The local runtime: every agent in this process, state in memory or in a SQLite file.

    async with LocalRuntime.sqlite(".cadre/cadre.db") as rt:
        await rt.send(AgentId("counter", "a"), Add(amount=2))
        await rt.run_until_idle()

One envelope at a time per agent, in order (the transport hands out one envelope per agent
at a time); different agents concurrently, up to `concurrency` steps at once. With the
SQLite store, pending envelopes and timers are in the file too, so a runtime stopped at any
point restarts with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..ids import AgentId
from ..inbox import INBOX_TYPE, InboxState, Reply
from ..messages import ContractRegistry, contracts
from ..processing import Disposition, Processed, Processor
from ..registry import Registry, default_registry
from ..retry import RetryPolicy
from ..settings import DEFAULT_CONCURRENCY, DEFAULT_SEEN_LIMIT, Settings
from ..step import Step
from ..stores.base import StateStore
from ..stores.memory import MemoryStore
from ..transports.base import Delivery
from ..transports.inprocess import InProcessTransport
from ._client import Client

log = logging.getLogger("cadre.local")


class LocalRuntime(Client):
    """Runs agents in-process over the in-process transport (`cadre.runtime.Embedded`).

    `concurrency` bounds the steps under way at once. A step keeps its slot while it waits
    on its model, so the bound is sized for steps that wait, not for CPUs: the default
    (`DEFAULT_CONCURRENCY`, 1024) lets that many agents wait on models while others run.
    An idle slot costs next to nothing; a step under way holds its agent's record and model
    context (docs/workers.md, "Sizing CADRE_CONCURRENCY"). It orders nothing: one agent's
    envelopes never overlap, whatever its value.
    """

    transport: InProcessTransport

    def __init__(
        self,
        *,
        store: StateStore | None = None,
        registry: Registry | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        contracts: ContractRegistry = contracts,
    ) -> None:
        self.store: StateStore = store if store is not None else MemoryStore()
        make_journal = getattr(self.store, "journal", None)
        self.transport = InProcessTransport(make_journal() if make_journal else None)
        self.registry = registry or default_registry
        self.step = Step(
            self.store,
            self.transport,
            registry=self.registry,
            contracts=contracts,
            seen_limit=seen_limit,
        )
        self.processor = Processor(self.step, policy=policy)
        self.concurrency = concurrency
        self._consumers: list[asyncio.Task[None]] = []
        self._in_step: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @classmethod
    def sqlite(cls, path: str | Path, **kwargs: Any) -> LocalRuntime:
        """A runtime on the SQLite store at `path` (the embedded default)."""
        from ..stores.sqlite import SQLiteStore

        return cls(store=SQLiteStore(path), **kwargs)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> LocalRuntime:
        """A runtime on the SQLite file ``CADRE_STATE`` with the settings' retry policy,
        concurrency and seen limit (`cadre run`, `cadre send`, `cadre serve`); `kwargs`
        go to the constructor (a `registry`, ...)."""
        local = settings.local
        kwargs.setdefault("policy", settings.retry.policy())
        kwargs.setdefault("concurrency", local.concurrency)
        kwargs.setdefault("seen_limit", settings.seen_limit)
        return cls.sqlite(local.state_path, **kwargs)

    async def start(self) -> None:
        """Reload pending envelopes and start consuming."""
        if self._consumers:
            return
        self._stopping = False
        await self.transport.start()
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"cadre-consumer-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Let steps under way finish, then stop. Queued envelopes stay queued."""
        self._stopping = True
        for task in self._consumers:
            if task not in self._in_step:
                task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumers = []

    async def close(self) -> None:
        """Stop, then release the transport and the store."""
        await self.stop()
        await super().close()

    def _sent(self) -> None:
        self.transport.flush()  # what the client sent is ready for the consumers now

    async def run_until_idle(self, *, include_timers: bool = False) -> None:
        """Wait until no envelope is queued or being handled.

        Timers that are not due yet do not count, unless `include_timers` is set, in which
        case this waits for them to fire and their effects to settle.
        """
        await self.transport.wait_idle(include_timers=include_timers)

    async def state(self, agent_id: AgentId) -> BaseModel:
        """The stored state of one agent, as its agent type's `State` model."""
        record = await self.store.load(agent_id)
        model = self.registry.get(agent_id.type).cls.State
        return model.model_validate_json(record.state) if record.state else model()

    async def replies(self, task_id: str) -> list[Reply]:
        """The replies to messages sent from outside with no `reply_to` in task `task_id`,
        oldest first (they are kept by the built-in inbox agent, see `cadre.inbox`)."""
        state = await self.state(AgentId(INBOX_TYPE, task_id))
        assert isinstance(state, InboxState)
        return list(state.replies)

    async def _consume(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._stopping:
            delivery = await self.transport.receive()
            self._in_step.add(current)
            try:
                await self._settle(delivery, await self._process(delivery))
            except Exception:  # a consumer must outlive any one delivery
                log.exception("settling %s failed; retrying it", delivery.envelope.id)
                await self.transport.retry(delivery, self.processor.policy.delay(1))
            finally:
                self._in_step.discard(current)

    async def _process(self, delivery: Delivery) -> Processed:
        try:
            return await self.processor.process(delivery.envelope)
        except Exception as exc:  # the store could not even record a dead letter
            log.exception("processing %s failed; it will be retried", delivery.envelope.id)
            delay = self.processor.policy.delay(delivery.envelope.attempt)
            return Processed(
                Disposition.RETRY, delivery.envelope, retry_after=delay, error=str(exc)
            )

    async def _settle(self, delivery: Delivery, processed: Processed) -> None:
        if processed.disposition is Disposition.RETRY:
            await self.transport.retry(delivery, processed.retry_after or 0.0)
        else:
            await self.transport.ack(delivery)
