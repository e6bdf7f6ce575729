"""Cosmos DB store: what the conformance suite does not show — the item layout, ids that
Cosmos would reject, TTL fields, error translation — against the local NoSQL server
(npm @vercel/cosmosdb-server; its limits are listed in docs/azure.md)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

pytest.importorskip("azure.cosmos")

from cadre.errors import ConcurrencyConflict, ConfigurationError, StoreError
from cadre.ids import AgentId
from cadre.settings import Settings
from cadre.stores.base import AgentRecord, DeadLetter
from cadre.stores.cosmos import (
    DEAD_LETTER_PREFIX,
    CosmosStore,
    item_id,
    shared_store,
)
from tests.support.cosmos_server import EMULATOR_KEY, open_test_store

pytestmark = pytest.mark.timeout(30)


async def raw_item(store: CosmosStore, id_: str, pk: str) -> dict:
    return await store._items().read_item(id_, partition_key=pk)


def test_item_ids_never_hold_characters_cosmos_rejects() -> None:
    for text in ["chat/a/b", "x/why?", "x/#1", "x/back\\slash", "x/ünïcode", "x/" + "k" * 400]:
        encoded = item_id(text)
        assert not set(encoded) & set("/\\?#")
        assert len(encoded) <= 255
    assert item_id("x/" + "k" * 400) != item_id("x/" + "k" * 401)
    assert base64.urlsafe_b64decode(item_id("chat/a/b") + "==") == b"chat/a/b"


async def test_agent_item_layout_is_a_point_read_on_the_agent_id(cosmos_store) -> None:
    agent = AgentId("chat", "user/42?#")
    await cosmos_store.save(AgentRecord(agent, state='{"n":1}'), if_match=None)
    item = await raw_item(cosmos_store, item_id("chat/user/42?#"), "chat/user/42?#")
    assert (item["kind"], item["agent_type"], item["agent_key"]) == ("agent", "chat", "user/42?#")
    assert "ttl" not in item  # no TTL configured: agents are kept
    assert (await cosmos_store.load(agent)).state == '{"n":1}'


async def test_configured_ttl_is_written_on_every_agent_save(cosmos_server) -> None:
    store = await open_test_store(cosmos_server, ttl_seconds=3600)
    try:
        agent = AgentId("chat", "t1")
        etag = await store.save(AgentRecord(agent, state="1"), if_match=None)
        await store.save(AgentRecord(agent, state="2"), if_match=etag)
        item = await raw_item(store, item_id("chat/t1"), "chat/t1")
        assert item["ttl"] == 3600
    finally:
        await store.drop_container()
        await store.close()


async def test_dead_letters_live_in_their_own_partitions_and_never_expire(cosmos_server) -> None:
    store = await open_test_store(cosmos_server, ttl_seconds=60)
    try:
        letter = DeadLetter(
            id="a/b?c#d",
            body=b"\x00\xff",
            reason="envelope_invalid",
            detail="d",
            failed_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        await store.add_dead_letter(letter)
        item = await raw_item(store, item_id("a/b?c#d"), DEAD_LETTER_PREFIX + "a/b?c#d")
        assert (item["kind"], item["ttl"]) == ("dead_letter", -1)
        assert await store.get_dead_letter("a/b?c#d") == letter
        # An agent record and its listing never mix with dead letters.
        await store.save(AgentRecord(AgentId("chat", "x"), state="1"), if_match=None)
        assert [d.id for d in await store.list_dead_letters()] == ["a/b?c#d"]
    finally:
        await store.drop_container()
        await store.close()


async def test_stale_etag_conflict_comes_from_the_server(cosmos_store) -> None:
    agent = AgentId("chat", "c")
    first = await cosmos_store.save(AgentRecord(agent, state="1"), if_match=None)
    await cosmos_store.save(AgentRecord(agent, state="2"), if_match=first)
    with pytest.raises(ConcurrencyConflict) as info:
        await cosmos_store.save(AgentRecord(agent, state="3"), if_match=first)
    assert info.value.__cause__.status_code == 412  # type: ignore[union-attr]


async def test_replacing_a_record_that_is_gone_is_a_conflict(cosmos_store) -> None:
    # E.g. expired by TTL between the load and the save: the step reloads and starts afresh.
    agent = AgentId("chat", "expired")
    with pytest.raises(ConcurrencyConflict, match="no longer exists"):
        await cosmos_store.save(AgentRecord(agent, state="1"), if_match="an-old-etag")
    assert (await cosmos_store.load(agent)).etag is None


async def test_a_missing_container_is_a_configuration_error(cosmos_server) -> None:
    store = CosmosStore(
        cosmos_server.endpoint,
        key=EMULATOR_KEY,
        database="cadre-tests",
        container="does-not-exist",
        client_options={"enable_endpoint_discovery": False},
    )
    try:
        with pytest.raises(ConfigurationError, match="container missing"):
            await store.list_dead_letters()
    finally:
        await store.close()


async def test_an_unreachable_endpoint_is_a_store_error() -> None:
    store = CosmosStore(
        "https://127.0.0.1:9",
        key=EMULATOR_KEY,
        client_options={"connection_verify": False, "retry_total": 0, "connection_timeout": 2},
    )
    try:
        with pytest.raises(StoreError):
            await store.load(AgentId("chat", "a"))
    finally:
        await store.close()


def test_settings_configure_the_store() -> None:
    with pytest.raises(ConfigurationError, match="CADRE_COSMOS_ENDPOINT"):
        CosmosStore.from_settings(Settings.from_env({}))
    with pytest.raises(ConfigurationError, match="at least 1"):
        Settings.from_env({"CADRE_COSMOS_TTL_SECONDS": "0"})
    settings = Settings.from_env(
        {
            "CosmosDB__accountEndpoint": "https://acct.documents.azure.com:443/",
            "CADRE_COSMOS_DATABASE": "db",
            "CADRE_COSMOS_CONTAINER": "agents",
            "CADRE_COSMOS_TTL_SECONDS": "86400",
        }
    )
    store = shared_store(settings)
    assert store is shared_store(settings)
    assert (store.endpoint, store.database, store.container_name, store.ttl_seconds) == (
        "https://acct.documents.azure.com:443/",
        "db",
        "agents",
        86400,
    )


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "azure.cosmos", None)  # as if not installed
    store = CosmosStore("https://acct.documents.azure.com:443/", key=EMULATOR_KEY)
    with pytest.raises(ConfigurationError, match=r"\.\[azure\]"):
        store._items()


# aiohttp warns when the SDK posts a body over 1 MiB as bytes: the SDK's choice, not an error
@pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")
async def test_a_team_message_too_large_for_a_cosmos_item_fails_the_task_naming_sizes(
    cosmos_store: CosmosStore,
) -> None:
    """Two sizes: an answer over a quarter of an item fails the task at the manager; one
    that would make the assistant's own record (history + its reply) exceed 2 MB is
    dead-lettered there, and the manager fails the task with that reason."""
    from cadre import LocalRuntime, Registry
    from cadre.models import ReplayClient
    from cadre.processing import RetryPolicy
    from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, Tasks

    fast = RetryPolicy(max_attempts=1, base_delay=0.001, max_delay=0.001)
    for size, expected in (
        (300_000, "a message from writer is 600,"),  # 'é': two bytes each
        (550_000, "failed (record_too_large): the record of writer/"),
    ):
        registry = Registry()
        team = RoundRobinTeam(
            f"big{size}",
            [Assistant("writer", model=ReplayClient(["é" * size]))],
            termination=MaxMessages(max_messages=5),
        ).register(registry)
        async with LocalRuntime(store=cosmos_store, registry=registry, policy=fast) as rt:
            tasks = Tasks(rt)
            task_id = await tasks.submit(team, "write a lot")
            await rt.run_until_idle()
            info = await tasks.status(task_id)
        assert info.status == "failed", info
        assert expected in (info.stop_reason or ""), info.stop_reason
        assert "2,000,000" in (info.stop_reason or "") or "500,000" in (info.stop_reason or "")
        assert [m.content for m in await tasks.messages(task_id)] == ["write a lot"]
