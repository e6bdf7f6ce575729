"""The HTTP API in front of workers: ``cadre serve --transport rabbitmq --store postgres``.

The serve process only submits and reads. `WorkersRuntime` is the workers' side of the seam
(`cadre.runtime.Runtime`, through the shared client side `cadre.hosts._client.Client`): it
sends envelopes to the workers' RabbitMQ partitions and reads the records the workers write
in PostgreSQL. The workers (``cadre worker``, any number, started separately) run every
step. Its store keeps no cache: every read goes to the table, because other processes
write it.
"""

from __future__ import annotations

import os
from typing import Any

from ..registry import Registry, default_registry
from ..settings import Settings
from ..stores.base import StateStore
from ..transports.rabbitmq import RabbitMQTransport
from ._client import HEALTH_PROBE, Client


class WorkersRuntime(Client):
    """Submits to the workers and reads their store (see the module docstring)."""

    transport: RabbitMQTransport

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
        """The store and broker the workers use (`settings.workers`); without a `registry`,
        the app's agents (``CADRE_APP``) in the default one."""
        from ..stores.postgres import PostgresStore

        if registry is None:
            from ..apps import load_app

            load_app(settings.app_modules)
        workers = settings.workers
        store = PostgresStore(
            workers.postgres_dsn, prefix=workers.postgres_prefix, max_size=4, cache_size=0
        )
        transport = RabbitMQTransport(
            workers.rabbitmq_url,
            name=workers.queue_name,
            partitions=workers.partitions,
            connection_name=f"cadre serve {workers.queue_name} {os.getpid()}",
            delivery_limit=workers.delivery_limit,
        )
        return cls(store, transport, registry=registry)

    async def start(self) -> None:
        """Connect to the broker (and declare its topology) and to the database."""
        await self.transport.connect()
        await self.store.load(HEALTH_PROBE)

    def transport_check(self) -> dict[str, Any]:
        """The broker connection is open."""
        connection = self.transport.connection
        connected = connection is not None and not connection.is_closed
        return {
            "ok": connected,
            "detail": f"RabbitMQ {self.transport.name!r} "
            + ("connected" if connected else "not connected"),
        }
