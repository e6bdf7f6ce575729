"""An Azure Cosmos DB (NoSQL API) state store: the Functions host's state.

    store = CosmosStore("https://acct.documents.azure.com:443/")   # DefaultAzureCredential
    store = CosmosStore(endpoint, key="...")                        # a key: local work

Layout (one container, partition key path ``/pk``, see docs/azure.md):
- an agent record is one item: ``pk`` = the agent id (``type/key``), ``id`` = a safe
  encoding of it (Cosmos ids cannot hold '/', '\\', '?', '#'), so `load` is a point read
  and `save` one conditional write on the item's ``_etag`` (create, or replace with
  If-Match); a lost race is a 409/412, raised as `ConcurrencyConflict`;
- a dead letter is one item under its own partition ``~dead-letter/<id>`` (``~`` cannot
  start an agent type, so it never meets an agent): point reads by id, listed newest first
  by a (rare, operator-driven) cross-partition query; ``ttl: -1`` keeps it until deleted;
- an agent's log (a team's transcript) is one item per entry in the agent's partition,
  ``id`` = ``~log-<seq>``: `read_log` is a single-partition query. Cosmos DB has no
  transaction across items that the step could use (and the local server's batches do not
  roll back), so a save keeps its entries in the agent item (``log``), creates the entry
  items right after, and `clear_outbox` drops them from the agent item; a `load` that still
  finds entries there (the process died in between) creates them first. Creating an entry
  that exists keeps the first: none is lost, none doubled;
- the ids a save moves out of `seen` go the same way, as one item per save in the agent's
  partition (``kind: evicted``, ``ids``), found by `was_evicted`'s single-partition query;
- every item is at most `max_item_bytes` as serialized (Cosmos DB: 2 MB with its system
  properties): a larger record is refused with `RecordTooLarge` before any request;
- with ``ttl_seconds`` agent, log and evicted-id items carry ``ttl``: Cosmos removes an
  agent that was not written for that long (finished agents and tasks age out). The
  container must have TTL switched on (``defaultTtl: -1``), as `create_container` does.

The SDK's client is created once, on first use, and reused by every call (one per
process in Functions: see `shared_store`); `close` releases it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from ..envelope import Envelope
from ..errors import (
    ConcurrencyConflict,
    ConfigurationError,
    NotFound,
    RecordTooLarge,
    StoreError,
    UnstorableValue,
)
from ..ids import AgentId
from .base import AgentRecord, DeadLetter, LogEntry

DEAD_LETTER_PREFIX = "~dead-letter/"
"""Partition key prefix of dead letters (agent types cannot start with '~')."""

_MAX_ID = 255

MAX_ITEM_BYTES = 2_000_000
"""Cosmos DB's 2 MB item limit (2,097,152 bytes) less room for its system properties."""


def _sdk() -> Any:
    try:
        from azure.cosmos import aio, exceptions
    except ImportError:
        raise ConfigurationError(
            "the Cosmos DB store needs azure-cosmos and aiohttp: pip install -e '.[azure]'"
        ) from None
    return aio, exceptions


def item_id(text: str) -> str:
    """A Cosmos item id for any text: base64url without padding (no '/', '\\', '?', '#'),
    or ``~`` + a 128-bit hash when that would exceed Cosmos' 255 characters."""
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    if len(encoded) <= _MAX_ID:
        return encoded
    return "~" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@asynccontextmanager
async def _translated(what: str, *, item: bool = True) -> AsyncIterator[None]:
    """The one place SDK errors become Cadre errors. A 404 is `NotFound` for an item
    operation, but a missing database or container (sub-status 1003, or any 404 of a
    query) is a `ConfigurationError`: loading it as "no record" would hide the mistake."""
    _, exceptions = _sdk()
    try:
        yield
    except exceptions.CosmosHttpResponseError as exc:
        if exc.status_code in (409, 412):
            raise ConcurrencyConflict(f"{what}: the stored version changed") from exc
        if exc.status_code == 404 and (not item or getattr(exc, "sub_status", None) == 1003):
            raise ConfigurationError(
                f"Cosmos DB database or container missing ({what}): provision it "
                "(infra/) or call CosmosStore.create_container()"
            ) from exc
        if exc.status_code == 404:
            raise NotFound(f"{what}: not found") from exc
        raise StoreError(f"Cosmos DB failed ({what}): {exc.status_code} {exc.message}") from exc
    except (OSError, TimeoutError) as exc:
        raise StoreError(f"Cosmos DB unreachable ({what}): {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("azure.", "aiohttp")):
            raise StoreError(f"Cosmos DB failed ({what}): {exc}") from exc
        raise


class CosmosStore:
    """State store on one Cosmos DB container (see the module docstring for the layout)."""

    max_item_bytes: int | None = MAX_ITEM_BYTES

    def __init__(
        self,
        endpoint: str,
        *,
        key: str | None = None,
        credential: Any = None,
        database: str = "cadre",
        container: str = "cadre",
        ttl_seconds: int | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if not endpoint:
            raise ConfigurationError(
                "the Cosmos DB store needs an endpoint (CADRE_COSMOS_ENDPOINT)"
            )
        if ttl_seconds is not None and ttl_seconds < 1:
            raise ConfigurationError(f"Cosmos TTL must be at least 1 second, got {ttl_seconds}")
        self.endpoint, self.database, self.container_name = endpoint, database, container
        self.ttl_seconds = ttl_seconds
        self._key, self._credential = key, credential
        self._options = dict(client_options or {})
        self._client: Any = None
        self._container: Any = None
        self._owns_credential = False

    @classmethod
    def from_settings(cls, settings: Any) -> CosmosStore:
        """A store configured by `cadre.settings.Settings` (the ``CADRE_COSMOS_*`` values)."""
        return cls(
            settings.cosmos_endpoint or "",
            key=settings.cosmos_key,
            database=settings.cosmos_database,
            container=settings.cosmos_container,
            ttl_seconds=settings.cosmos_ttl_seconds,
        )

    def _open_client(self) -> Any:
        if self._client is None:
            aio, _ = _sdk()
            credential = self._key or self._credential
            if credential is None:
                try:
                    from azure.identity.aio import DefaultAzureCredential
                except ImportError:
                    raise ConfigurationError(
                        "Cosmos DB without a key needs azure-identity: pip install -e '.[azure]'"
                    ) from None
                credential = self._credential = DefaultAzureCredential()
                self._owns_credential = True
            self._client = aio.CosmosClient(self.endpoint, credential, **self._options)
        return self._client

    def _items(self) -> Any:
        if self._container is None:
            database = self._open_client().get_database_client(self.database)
            self._container = database.get_container_client(self.container_name)
        return self._container

    async def create_container(self, throughput: int | None = None) -> None:
        """Create the database and container if missing (development and tests; production
        provisions them with Bicep): partition key ``/pk``, TTL on with no default."""
        from azure.cosmos import PartitionKey

        client = self._open_client()
        async with _translated(f"create container {self.container_name}"):
            db = await client.create_database_if_not_exists(self.database)
            self._container = await db.create_container_if_not_exists(
                self.container_name,
                partition_key=PartitionKey("/pk"),
                default_ttl=-1,
                offer_throughput=throughput,
            )

    async def drop_container(self) -> None:
        """Delete this store's container (tests)."""
        client = self._open_client()
        async with _translated(f"delete container {self.container_name}"):
            await client.get_database_client(self.database).delete_container(self.container_name)
        self._container = None

    async def load(self, agent_id: AgentId) -> AgentRecord:
        """A point read by (id, partition key); an empty record when there is none."""
        pk = str(agent_id)
        try:
            async with _translated(f"load {pk}"):
                item = await self._items().read_item(item_id(pk), partition_key=pk)
        except NotFound:
            return AgentRecord(agent_id)
        if item.get("log"):  # a save that died before its entries were created
            await self._create_entries(pk, [_entry(e) for e in item["log"]])
        if item.get("evicted"):  # ... or before its evicted ids were
            await self._create_evicted(pk, item["evicted"])
        return AgentRecord(
            agent_id,
            item.get("state"),
            item.get("state_version", 1),
            tuple(item.get("seen", ())),
            tuple(Envelope.model_validate(e) for e in item.get("outbox", ())),
            item["_etag"],
        )

    def _agent_item(self, record: AgentRecord) -> dict[str, Any]:
        pk = str(record.agent_id)
        item: dict[str, Any] = {
            "id": item_id(pk),
            "pk": pk,
            "kind": "agent",
            "agent_type": record.agent_id.type,
            "agent_key": record.agent_id.key,
            "state": record.state,
            "state_version": record.state_version,
            "seen": list(record.seen),
            "outbox": [e.model_dump(mode="json") for e in record.outbox],
        }
        if record.log:
            item["log"] = [{"stream": e.stream, "seq": e.seq, "data": e.data} for e in record.log]
        if record.evicted:
            item["evicted"] = list(record.evicted)
        if self.ttl_seconds is not None:
            item["ttl"] = self.ttl_seconds
        try:
            size = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode())
        except UnicodeEncodeError as exc:  # a lone surrogate: the service takes only UTF-8
            raise UnstorableValue(
                f"the record of {pk} has text with a lone surrogate ({exc.reason}), which "
                "has no UTF-8 form; nothing was stored"
            ) from None
        if size > MAX_ITEM_BYTES:
            raise RecordTooLarge(
                f"the record of {pk} would be {size:,} bytes, over the {MAX_ITEM_BYTES:,} a "
                "Cosmos DB item may hold (state, outbox and new log entries together); "
                "send smaller messages or keep less state"
            )
        return item

    async def _create_entries(self, pk: str, entries: list[LogEntry]) -> None:
        """One item per entry (a create: an entry already there keeps the first)."""
        for entry in entries:
            item: dict[str, Any] = {
                "id": f"~log-{entry.seq}",
                "pk": pk,
                "kind": "log",
                "stream": entry.stream,
                "seq": entry.seq,
                "data": entry.data,
            }
            if self.ttl_seconds is not None:
                item["ttl"] = self.ttl_seconds
            try:
                async with _translated(f"log {pk} #{entry.seq}"):
                    await self._items().create_item(item)
            except ConcurrencyConflict:
                pass  # created by an earlier try

    async def _create_evicted(self, pk: str, ids: list[str]) -> None:
        """One item for the ids one save evicted, named after the first (an id leaves `seen`
        once, so the name is the save's; a create: a second try keeps the first)."""
        item: dict[str, Any] = {
            "id": "~ev-" + item_id(ids[0]),
            "pk": pk,
            "kind": "evicted",
            "ids": ids,
        }
        if self.ttl_seconds is not None:
            item["ttl"] = self.ttl_seconds
        with contextlib.suppress(ConcurrencyConflict):  # created by an earlier try
            async with _translated(f"evicted ids of {pk}"):
                await self._items().create_item(item)

    async def was_evicted(self, agent_id: AgentId, envelope_id: str) -> bool:
        """A single-partition query over the agent's evicted-id items (an indexed
        ARRAY_CONTAINS)."""
        pk = str(agent_id)
        query = (
            "SELECT VALUE 1 FROM c WHERE c.pk = @pk AND c.kind = 'evicted' "
            "AND ARRAY_CONTAINS(c.ids, @id)"
        )
        parameters: list[dict[str, Any]] = [
            {"name": "@pk", "value": pk},
            {"name": "@id", "value": envelope_id},
        ]
        async with _translated(f"evicted ids of {pk}", item=False):
            async for _ in self._items().query_items(
                query, parameters=parameters, partition_key=pk
            ):
                return True
        return False

    async def read_log(self, stream: str, start: int = 0, limit: int = 100) -> list[LogEntry]:
        """A single-partition query (the stream is the agent's partition key)."""
        query = (
            "SELECT TOP @limit c.seq, c.data FROM c WHERE c.pk = @pk AND c.kind = 'log' "
            "AND c.seq >= @start ORDER BY c.seq"
        )
        parameters: list[dict[str, Any]] = [
            {"name": "@limit", "value": max(int(limit), 0)},
            {"name": "@pk", "value": stream},
            {"name": "@start", "value": max(int(start), 0)},
        ]
        async with _translated(f"read log {stream}", item=False):
            items = [
                item
                async for item in self._items().query_items(
                    query, parameters=parameters, partition_key=stream
                )
            ]
        return [LogEntry(stream, int(i["seq"]), str(i["data"])) for i in items]

    async def save(self, record: AgentRecord, *, if_match: str | None) -> str:
        """Create (``if_match=None``) or replace If-Match the etag; one request either way."""
        from azure.core import MatchConditions

        item = self._agent_item(record)
        try:
            async with _translated(f"save {item['pk']}"):
                if if_match is None:
                    written = await self._items().create_item(item)
                else:
                    written = await self._items().replace_item(
                        item["id"],
                        item,
                        etag=if_match,
                        match_condition=MatchConditions.IfNotModified,
                    )
        except NotFound as exc:  # gone since it was read (deleted, or expired by TTL)
            raise ConcurrencyConflict(f"{item['pk']}: the record no longer exists") from exc
        if record.log:
            await self._create_entries(item["pk"], list(record.log))
        if record.evicted:
            await self._create_evicted(item["pk"], list(record.evicted))
        return str(written["_etag"])

    async def clear_outbox(self, agent_id: AgentId, etag: str) -> None:
        """Empty the outbox and the log entries (created by then) if the item is still the one
        written with `etag`: one patch, If-Match the etag (the item gets a new etag). A
        record that moved on is left alone."""
        from azure.core import MatchConditions

        pk = str(agent_id)
        try:
            async with _translated(f"clear outbox {pk}"):
                await self._items().patch_item(
                    item_id(pk),
                    partition_key=pk,
                    patch_operations=[
                        {"op": "set", "path": "/outbox", "value": []},
                        {"op": "set", "path": "/log", "value": []},
                        {"op": "set", "path": "/evicted", "value": []},
                    ],
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ConcurrencyConflict, NotFound):
            pass  # a later step wrote the record: its outbox is not ours to clear

    async def add_dead_letter(self, letter: DeadLetter) -> None:
        """Keep it (a create: the same id twice keeps the first)."""
        pk = DEAD_LETTER_PREFIX + letter.id
        item = {
            "id": item_id(letter.id),
            "pk": pk,
            "kind": "dead_letter",
            "letter_id": letter.id,
            "body": base64.b64encode(letter.body).decode(),
            "reason": letter.reason,
            "detail": letter.detail,
            "failed_at": letter.failed_at.isoformat(),
            "failed_at_ts": letter.failed_at.timestamp(),
            "attempts": letter.attempts,
            "agent": letter.agent,
            "message": letter.message,
            "task_id": letter.task_id,
            "extra": letter.extra,
            "ttl": -1,
        }
        try:
            async with _translated(f"dead letter {letter.id}"):
                await self._items().create_item(item)
        except ConcurrencyConflict:
            pass  # already kept

    async def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first (a cross-partition query: TOP + ORDER BY)."""
        query = (
            "SELECT TOP @limit * FROM c WHERE c.kind = 'dead_letter' ORDER BY c.failed_at_ts DESC"
        )
        async with _translated("list dead letters", item=False):
            items = [
                item
                async for item in self._items().query_items(
                    query, parameters=[{"name": "@limit", "value": int(limit)}]
                )
            ]
        return [_letter(item) for item in items]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter:
        """One dead letter or `NotFound` (a point read)."""
        async with _translated(f"dead letter {letter_id}"):
            item = await self._items().read_item(
                item_id(letter_id), partition_key=DEAD_LETTER_PREFIX + letter_id
            )
        return _letter(item)

    async def delete_dead_letter(self, letter_id: str) -> None:
        """Remove one or raise `NotFound`."""
        async with _translated(f"dead letter {letter_id}"):
            await self._items().delete_item(
                item_id(letter_id), partition_key=DEAD_LETTER_PREFIX + letter_id
            )

    async def close(self) -> None:
        """Close the SDK client (and the credential this store created)."""
        client, self._client, self._container = self._client, None, None
        if client is not None:
            await client.close()
        if self._owns_credential:
            credential, self._credential, self._owns_credential = self._credential, None, False
            await credential.close()


def _entry(item: dict[str, Any]) -> LogEntry:
    return LogEntry(str(item["stream"]), int(item["seq"]), str(item["data"]))


def _letter(item: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        id=item["letter_id"],
        body=base64.b64decode(item["body"]),
        reason=item["reason"],
        detail=item["detail"],
        failed_at=datetime.fromisoformat(item["failed_at"]),
        attempts=item["attempts"],
        agent=item.get("agent"),
        message=item.get("message"),
        task_id=item.get("task_id"),
        extra=dict(item.get("extra") or {}),
    )


_shared: dict[tuple[Any, ...], CosmosStore] = {}


def shared_store(settings: Any) -> CosmosStore:
    """One store (one SDK client) per process and settings, reused by every invocation."""
    key = (settings.cosmos_endpoint, settings.cosmos_database, settings.cosmos_container)
    store = _shared.get(key)
    if store is None:
        store = _shared[key] = CosmosStore.from_settings(settings)
    return store
