"""The host seam (`cadre.runtime`): every host's runtime is the one shared client side
(`cadre.hosts._client.Client`), built from the settings by its ``from_settings``, and the
settings have one default each."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cadre import AgentId, LocalRuntime, TopicId
from cadre.envelope import Envelope
from cadre.errors import NotFound
from cadre.hosts._client import Client, client_envelopes
from cadre.hosts.functions import DEFAULT_MAX_WAIT, FunctionsRuntime
from cadre.hosts.worker import WorkerConfig, config_from_settings
from cadre.hosts.worker_api import WorkersRuntime
from cadre.runtime import Embedded, Runtime, Sender
from cadre.settings import (
    DEFAULT_CONCURRENCY,
    FunctionsSettings,
    LocalSettings,
    Settings,
    WorkersSettings,
)
from cadre.stores.base import DeadLetter
from cadre.stores.memory import MemoryStore
from cadre.stores.sqlite import SQLiteStore
from cadre.transports.rabbitmq import RabbitMQTransport
from tests.support.contracts import Add, Note, make_registry

HOSTS = (LocalRuntime, FunctionsRuntime, WorkersRuntime)
SHARED = ("send", "publish", "redrive", "health", "__aenter__", "__aexit__")


class Recording:
    """A transport that keeps what it is given (where Service Bus would be)."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.closed = False

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        self.sent.extend(envelopes)

    async def close(self) -> None:
        self.closed = True


def protocol_members(protocol: type) -> set[str]:
    names = set()
    for klass in protocol.__mro__:
        if klass is object or klass.__name__ in ("Protocol", "Generic"):
            continue
        names |= {n for n in vars(klass) if not n.startswith("_") or n in SHARED}
        names |= set(getattr(klass, "__annotations__", {}))
    return names


def test_every_host_is_the_one_client_side() -> None:
    for host in HOSTS:
        assert issubclass(host, Client)
        for name in SHARED:  # not copies: the same code in every host
            assert getattr(host, name) is getattr(Client, name), (host.__name__, name)
    assert protocol_members(Sender) == {"store", "registry", "send"}
    assert protocol_members(Runtime) - protocol_members(Sender) == {
        "publish", "redrive", "health", "start", "close", "__aenter__", "__aexit__",
    }  # fmt: skip
    assert protocol_members(Embedded) - protocol_members(Runtime) == {"run_until_idle"}
    runtimes = [
        LocalRuntime(),
        FunctionsRuntime(MemoryStore(), Recording()),
        WorkersRuntime(MemoryStore(), RabbitMQTransport("amqp://127.0.0.1:1/")),
    ]
    for rt in runtimes:
        missing = [n for n in protocol_members(Runtime) if not hasattr(rt, n)]
        assert missing == [], (type(rt).__name__, missing)
    assert hasattr(runtimes[0], "run_until_idle")  # only the local runtime is Embedded
    assert not any(hasattr(rt, "run_until_idle") for rt in runtimes[1:])


async def test_a_remote_host_sends_publishes_and_redrives_through_the_client_side() -> None:
    store, transport = MemoryStore(), Recording()
    async with FunctionsRuntime(store, transport, registry=make_registry(), topic="t") as rt:
        sent = await rt.send(AgentId("counter", "a"), Add(amount=2), task_id="task-1")
        assert (sent.recipient, sent.task_id, sent.reply_to) == (
            "counter/a",
            "task-1",
            "cadre.inbox/task-1",
        )
        published = await rt.publish(TopicId("news", "k"), Note(text="hi"))
        assert [e.recipient for e in published] == ["recorder/k", "listener/k", "announcer/k"]
        assert len({e.task_id for e in published}) == 1 and published[0].topic == "news/k"
        [dead] = client_envelopes(Add(amount=1), ["counter/b"])
        body = dead.model_copy(update={"attempt": 4}).to_bytes()
        await store.add_dead_letter(
            DeadLetter("d1", body, "handler-failed", "boom", datetime.now(UTC), attempts=4)
        )
        redriven = await rt.redrive("d1")
        assert (redriven.id, redriven.attempt) == (dead.id, 1)
        assert await store.list_dead_letters() == []
        with pytest.raises(NotFound):
            await rt.redrive("d1")
        assert transport.sent == [sent, *published, redriven]
        assert await rt.health() == {
            "store": {"ok": True, "detail": "MemoryStore answered a read"},
            "transport": {"ok": True, "detail": "Recording to 't'"},
        }
    assert transport.closed


async def test_the_local_runtime_is_built_from_its_settings_group(tmp_path: Path) -> None:
    env = {
        "CADRE_STATE": str(tmp_path / "state.db"),
        "CADRE_CONCURRENCY": "3",
        "CADRE_MAX_ATTEMPTS": "2",
        "CADRE_SEEN_LIMIT": "9",
    }
    async with LocalRuntime.from_settings(Settings.from_env(env), registry=make_registry()) as rt:
        assert isinstance(rt.store, SQLiteStore)
        assert rt.concurrency == 3 and len(rt._consumers) == 3
        assert rt.processor.policy.max_attempts == 2 and rt.step.seen_limit == 9
        await rt.send(AgentId("counter", "a"), Add(amount=5))
        await rt.run_until_idle()
        assert (await rt.state(AgentId("counter", "a"))).total == 5  # type: ignore[attr-defined]
        assert await rt.health() == {
            "store": {"ok": True, "detail": "SQLiteStore answered a read"},
            "transport": {"ok": True, "detail": "InProcessTransport"},
        }
    assert (tmp_path / "state.db").exists()


async def test_the_workers_runtime_is_built_from_the_workers_group() -> None:
    env = {"CADRE_QUEUE_NAME": "seam", "CADRE_PARTITIONS": "3", "CADRE_POSTGRES_PREFIX": "s_"}
    registry = make_registry()
    rt = WorkersRuntime.from_settings(Settings.from_env(env), registry=registry)
    assert (rt.transport.name, rt.transport.partitions) == ("seam", 3)
    assert rt.store.prefix == "s_" and rt.registry is registry  # type: ignore[attr-defined]
    unconnected = WorkersRuntime(MemoryStore(), rt.transport)
    assert (await unconnected.health())["transport"] == {
        "ok": False,
        "detail": "RabbitMQ 'seam' not connected",
    }


def test_each_setting_has_one_default() -> None:
    read = config_from_settings(Settings.from_env({}))
    assert read == WorkerConfig()  # the worker's defaults are the settings'
    workers = WorkersSettings()
    assert (read.concurrency, read.partitions, read.relay_after, read.step_batch) == (
        workers.concurrency,
        workers.partitions,
        workers.relay_after_seconds,
        workers.step_batch,
    )
    assert workers.concurrency == LocalSettings().concurrency == DEFAULT_CONCURRENCY
    assert LocalRuntime().concurrency == DEFAULT_CONCURRENCY
    assert FunctionsSettings().retry_wait_seconds == DEFAULT_MAX_WAIT
    assert Settings.from_env({}) == Settings()  # reading nothing gives the defaults


def test_settings_groups_read_their_variables_and_the_flat_names_still_answer() -> None:
    env = {
        "CADRE_STATE": "x.db",
        "CADRE_CONCURRENCY": "12",
        "CADRE_API_KEY": "k",
        "CADRE_RETRY_MAX_SECONDS": "7",
        "CADRE_COSMOS_DATABASE": "db",
        "CADRE_FUNCTIONS_RETRY_WAIT_SECONDS": "3",
        "CADRE_QUEUE_NAME": "q",
    }
    settings = Settings.from_env(env)
    assert settings.local == LocalSettings(state_path=Path("x.db"), concurrency=12)
    assert settings.workers.concurrency == 12 and settings.workers.queue_name == "q"
    assert (settings.api.key, settings.retry.max_seconds) == ("k", 7.0)
    assert (settings.azure.cosmos_database, settings.functions.retry_wait_seconds) == ("db", 3)
    assert settings.retry.policy().max_delay == 7.0
    # the names of the flat settings of before, for code written against them
    flat: Any = settings
    assert (flat.state_path, flat.api_key, flat.queue_name, flat.cosmos_database) == (
        Path("x.db"),
        "k",
        "q",
        "db",
    )
    assert flat.retry_policy() == settings.retry.policy()
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = flat.nothing
    changed = settings.replace(local__state_path=Path("y.db"), app_modules=("app",))
    assert changed.local.state_path == Path("y.db") and changed.local.concurrency == 12
    assert changed.app_modules == ("app",) and changed.api == settings.api
    assert dataclasses.replace(settings) == settings
