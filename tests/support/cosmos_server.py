"""The local Cosmos DB server for tests (npm @vercel/cosmosdb-server), and its test-only
work-around: reading a missing item there answers 500, where Cosmos answers 404."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tests.support.node_process import ROOT, NodeProcess, start_node

CLI = ROOT / "node_modules" / "@vercel" / "cosmosdb-server" / "lib" / "cli.js"
EMULATOR_KEY = (
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
)
"""The well-known emulator key: the server accepts any key, the SDK wants base64."""


@dataclass
class CosmosServer:
    """A running server process and its endpoint."""

    node: NodeProcess
    endpoint: str

    def stop(self) -> None:
        """Stop the server process (this fixture's own child, by its handle)."""
        self.node.stop()


def start_cosmos_server() -> CosmosServer | str:
    """Start the server; a reason string when it cannot run here."""
    try:
        import aiohttp  # noqa: F401
        import azure.cosmos  # noqa: F401
    except ImportError:
        return "Cosmos DB: azure-cosmos/aiohttp not installed (pip install -e '.[dev]')"
    node = start_node(
        "Cosmos DB server",
        CLI,
        lambda port: ["-p", str(port), "--host", "127.0.0.1", "--no-ssl"],
        timeout=15,
    )
    if isinstance(node, str):
        return node
    return CosmosServer(node, f"http://127.0.0.1:{node.port}")


class MissingItemIs404:
    """Wraps the SDK's container client so a missing item reads as the 404 real Cosmos
    answers. Test set-up only; production code never sees it.

    The server answers 500 for a missing item, which the SDK also retries for ~0.5 s, so a
    read of an item not known to exist asks first (a query on id and partition key). Items
    this wrapper saw written or read are known to exist (each test owns its container);
    those are read directly, so a step costs the server what it costs real Cosmos."""

    def __init__(self, container: Any) -> None:
        self._container = container
        self._known: set[tuple[str, str]] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    async def _exists(self, item: str, partition_key: Any) -> bool:
        if (item, partition_key) in self._known:
            return True
        # Not COUNT(1): the server's COUNT ignores the WHERE clause.
        query = "SELECT c.id FROM c WHERE c.pk = @pk AND c.id = @id"
        params = [{"name": "@pk", "value": partition_key}, {"name": "@id", "value": item}]
        found = [n async for n in self._container.query_items(query, parameters=params)]
        return bool(found)

    async def read_item(self, item: str, partition_key: Any, **kwargs: Any) -> Any:
        """Read one item; a missing one raises `CosmosResourceNotFoundError` (404)."""
        from azure.cosmos import exceptions

        if not await self._exists(item, partition_key):
            raise exceptions.CosmosResourceNotFoundError(
                status_code=404, message=f"item {item} not found"
            )
        result = await self._container.read_item(item, partition_key=partition_key, **kwargs)
        self._known.add((item, partition_key))
        return result

    async def create_item(self, body: dict[str, Any], **kwargs: Any) -> Any:
        """Create, remembering that the item exists."""
        result = await self._container.create_item(body, **kwargs)
        self._known.add((body["id"], body["pk"]))
        return result

    async def delete_item(self, item: str, partition_key: Any, **kwargs: Any) -> Any:
        """Delete, forgetting the item."""
        self._known.discard((item, partition_key))
        return await self._container.delete_item(item, partition_key=partition_key, **kwargs)


def _local_server_store_class() -> type:
    from cadre.stores.cosmos import CosmosStore

    class LocalServerCosmosStore(CosmosStore):
        """A CosmosStore whose container client is wrapped in `MissingItemIs404`, also
        after `close()` (the local runtime closes its store; tests go on using it)."""

        def _items(self) -> Any:
            items = super()._items()
            if not isinstance(items, MissingItemIs404):
                items = self._container = MissingItemIs404(items)
            return items

    return LocalServerCosmosStore


async def open_test_store(server: CosmosServer, **options: Any) -> Any:
    """A CosmosStore on a fresh container of `server` (each test its own)."""
    store = _local_server_store_class()(
        server.endpoint,
        key=EMULATOR_KEY,
        database="cadre-tests",
        container=f"t{uuid.uuid4().hex[:12]}",
        # --no-ssl: the server still advertises https, so no endpoint discovery.
        client_options={"enable_endpoint_discovery": False},
        **options,
    )
    await store.create_container()
    return store
