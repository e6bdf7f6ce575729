"""The HTTP API in front of workers: ``cadre serve --transport rabbitmq --store postgres``.

The serve process only submits and reads. `WorkersRuntime` is what the API needs (``send``,
``store``, ``registry``, ``redrive``, ``health``): it sends envelopes to the workers'
RabbitMQ partitions and reads the records the workers write in PostgreSQL. The workers
(``cadre worker``, any number, started separately) run every step. Its store keeps no
cache: every read goes to the table, because other processes write it.
"""

from __future__ import annotations

import os
from typing import Any

from ..envelope import Envelope
from ..ids import AgentId
from ..inbox import INBOX_TYPE
from ..messages import Message
from ..registry import Registry, default_registry
from ..settings import Settings
from ..stores.base import StateStore
from ..transports.rabbitmq import RabbitMQTransport
from .worker import submit


class WorkersRuntime:
    """Submits to the workers and reads their store (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        transport: RabbitMQTransport,
        *,
        registry: Registry | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.registry = registry or default_registry

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry | None = None) -> WorkersRuntime:
        """The app's agents (``CADRE_APP``), and the store and broker the workers use."""
        from ..stores.postgres import PostgresStore

        if registry is None:
            from ..cli import load_app

            load_app(settings.app_modules)
        store = PostgresStore(
            settings.postgres_dsn, prefix=settings.postgres_prefix, max_size=4, cache_size=0
        )
        transport = RabbitMQTransport(
            settings.rabbitmq_url,
            name=settings.queue_name,
            partitions=settings.partitions,
            connection_name=f"cadre serve {settings.queue_name} {os.getpid()}",
        )
        return cls(store, transport, registry=registry)

    async def start(self) -> None:
        """Connect to the broker (and declare its topology) and to the database."""
        await self.transport.connect()
        await self.store.load(AgentId(INBOX_TYPE, "health-probe"))

    async def send(
        self,
        to: AgentId,
        message: Message,
        *,
        task_id: str | None = None,
        reply_to: AgentId | None = None,
    ) -> Envelope:
        """Send a message from outside any agent to the workers; a new task unless
        `task_id` is given. Replies go to `reply_to`, or else to the task's inbox."""
        return await submit(self.transport, to, message, task_id=task_id, reply_to=reply_to)

    async def redrive(self, letter_id: str) -> Envelope:
        """Send a dead letter's envelope again (attempt 1) and remove it from the dead
        letters (`NotFound` when there is none)."""
        from .local import redrive_letter

        return await redrive_letter(self.store, self.transport, letter_id)

    async def health(self) -> dict[str, dict[str, Any]]:
        """``GET /api/health``: the store answers a read; the broker connection is open."""
        from .local import store_check

        store = await store_check(self.store)
        connection = self.transport.connection
        connected = connection is not None and not connection.is_closed
        transport = {
            "ok": connected,
            "detail": f"RabbitMQ {self.transport.name!r} "
            + ("connected" if connected else "not connected"),
        }
        return {"store": store, "transport": transport}

    async def close(self) -> None:
        """Release the broker connection and the store."""
        try:
            await self.transport.close()
        finally:
            await self.store.close()
