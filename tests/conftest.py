"""Fixtures shared by every suite: one fixture per adapter, resolved lazily by name so a
missing server skips only its own cases locally and fails them in CI (CI=true)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from cadre.stores.memory import MemoryStore
from cadre.stores.sqlite import SQLiteStore
from cadre.transports.inprocess import InProcessTransport

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

STORES = ["memory", "sqlite", "postgres", "cosmos"]
POSTGRES_DSN = os.environ.get("CADRE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("CADRE_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
TRANSPORTS = ["inprocess", "inprocess_journal"]


def unavailable(reason: str) -> None:
    """Skip on a laptop, fail in CI: a service the suite needs is missing."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}")
    pytest.skip(reason)


def worker_env(name: str, partitions: int, rabbitmq_url: str = RABBITMQ_URL) -> dict[str, str]:
    """The settings of a `cadre worker` (or `cadre serve`) process on `workers_backend`'s
    queues and tables `name`."""
    return {
        "CADRE_RABBITMQ_URL": rabbitmq_url,
        "CADRE_POSTGRES_URL": POSTGRES_DSN,
        "CADRE_POSTGRES_PREFIX": f"{name}_",
        "CADRE_QUEUE_NAME": name,
        "CADRE_PARTITIONS": str(partitions),
    }


def worker_config(name: str, partitions: int, **overrides: Any) -> Any:
    """The `WorkerConfig` of a worker on `workers_backend`'s queues and tables `name`."""
    from cadre.hosts.worker import WorkerConfig

    return WorkerConfig(
        rabbitmq_url=RABBITMQ_URL,
        postgres_dsn=POSTGRES_DSN,
        name=name,
        table_prefix=f"{name}_",
        partitions=partitions,
        **overrides,
    )


@asynccontextmanager
async def workers_backend(
    partitions: int, letter: str = "t", **transport_options: Any
) -> AsyncIterator[tuple[str, Any, Any]]:
    """A PostgreSQL store (migrated) and a RabbitMQ transport (connected, with
    `transport_options`) under a fresh name, as ``(name, store, transport)``; both are
    dropped afterwards. Unavailable services skip locally and fail in CI."""
    try:
        from cadre.stores.postgres import PostgresStore
        from cadre.transports.rabbitmq import RabbitMQTransport

        name = f"{letter}{uuid.uuid4().hex[:10]}"
        store = PostgresStore(POSTGRES_DSN, prefix=f"{name}_", max_size=2)
        await store.migrate()
        transport = RabbitMQTransport(
            RABBITMQ_URL, name=name, partitions=partitions, **transport_options
        )
        await transport.connect()
    except Exception as exc:
        unavailable(f"RabbitMQ or PostgreSQL: {exc}")
    try:
        yield name, store, transport
    finally:
        await transport.delete_topology()
        await transport.close()
        await store.drop()
        await store.close()


@pytest.fixture
async def memory_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "cadre.db")
    yield store
    await store.close()


@pytest.fixture
async def postgres_store() -> AsyncIterator[object]:
    """A PostgreSQL store on its own table prefix, dropped afterwards."""
    import uuid

    from cadre.errors import ConfigurationError, StoreError

    try:
        from cadre.stores.postgres import PostgresStore

        store = PostgresStore(POSTGRES_DSN, prefix=f"t{uuid.uuid4().hex[:12]}_", max_size=4)
        await store.migrate()
    except (ConfigurationError, StoreError) as exc:
        unavailable(f"PostgreSQL: {exc}")
    yield store
    await store.drop()
    await store.close()


@pytest.fixture(scope="session")
def cosmos_server() -> object:
    """A local Cosmos DB NoSQL server (npm @vercel/cosmosdb-server) for the whole session."""
    from tests.support.cosmos_server import start_cosmos_server

    server = start_cosmos_server()
    if isinstance(server, str):
        unavailable(server)
    yield server
    server.stop()


@pytest.fixture
async def cosmos_store(cosmos_server) -> AsyncIterator[object]:  # type: ignore[no-untyped-def]
    """A Cosmos store on its own container of the local server, deleted afterwards."""
    from tests.support.cosmos_server import open_test_store

    store = await open_test_store(cosmos_server)
    yield store
    await store.drop_container()
    await store.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every state store adapter, by name."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
async def inprocess_transport() -> AsyncIterator[InProcessTransport]:
    transport = InProcessTransport()
    await transport.start()
    yield transport
    await transport.close()


@pytest.fixture
async def inprocess_journal_transport(tmp_path: Path) -> AsyncIterator[InProcessTransport]:
    store = SQLiteStore(tmp_path / "queue.db")
    transport = InProcessTransport(store.journal())
    await transport.start()
    yield transport
    await transport.close()
    await store.close()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Every transport adapter (with its consumer side), by name."""
    return request.getfixturevalue(f"{request.param}_transport")
