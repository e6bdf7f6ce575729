"""What ``func start`` reads besides the code: local.settings.example.json, host.json,
requirements.txt, and AzureWebJobsStorage on Azurite (the host's keys and locks)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cadre.hosts.functions import FunctionsRuntime
from cadre.settings import Settings
from cadre.stores.cosmos import CosmosStore
from cadre.transports.servicebus import ServiceBusTransport
from tests.conftest import unavailable

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
NOT_READ_BY_FUNCTIONS = {
    # the local runtime and the workers' settings: the Functions host has no SQLite file,
    # no consumer pool, no RabbitMQ or PostgreSQL, and no health file.
    "CADRE_STATE",
    "CADRE_CONCURRENCY",
    "CADRE_RABBITMQ_URL",
    "CADRE_POSTGRES_URL",
    "CADRE_POSTGRES_PREFIX",
    "CADRE_QUEUE_NAME",
    "CADRE_LOCAL_DELIVERY",
    "CADRE_RELAY_AFTER_SECONDS",
    "CADRE_STEP_BATCH",
    "CADRE_DELIVERY_LIMIT",
    "CADRE_HEALTH_PORT",
    "CADRE_PARTITIONS",
    "CADRE_WORKER_INDEX",
    "CADRE_WORKER_COUNT",
    "CADRE_HEALTH_FILE",
}


def local_settings() -> dict[str, Any]:
    return dict(json.loads((ROOT / "local.settings.example.json").read_text())["Values"])


def settings_table() -> set[str]:
    import cadre.settings

    doc = cadre.settings.__doc__ or ""
    return set(re.findall(r"^\| ([A-Za-z_][A-Za-z0-9_]*) +\|", doc, re.MULTILINE)) - {"variable"}


def seconds(text: str) -> float:
    hours, minutes, secs = text.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes), seconds=float(secs)).total_seconds()


def test_local_settings_name_every_setting_the_functions_app_reads() -> None:
    values = local_settings()
    table = settings_table()
    assert {"CADRE_COSMOS_ENDPOINT", "ServiceBusConnection", "CADRE_MODEL"} <= table
    alternative = json.loads((ROOT / "local.settings.example.json").read_text())
    missing = (
        table - NOT_READ_BY_FUNCTIONS - values.keys() - alternative["IdentityInsteadOfKeys"].keys()
    )
    assert not missing, f"add to local.settings.example.json: {sorted(missing)}"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"  # Azurite
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in values
    assert all(isinstance(v, str) for v in values.values())  # the host reads strings only
    settings = Settings.from_env(values)  # the example parses as it stands
    assert (settings.azure.servicebus_topic, settings.azure.cosmos_database) == ("cadre", "cadre")
    assert settings.functions.retry_wait_seconds == 30.0


def test_host_json_keeps_sessions_locks_and_timeouts_consistent() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {
        "id": "Microsoft.Azure.Functions.ExtensionBundle",
        "version": "[4.*, 5.0.0)",
    }
    service_bus = host["extensions"]["serviceBus"]
    assert service_bus["autoCompleteMessages"] is True  # return completes, raise abandons
    # The session lock is renewed for as long as an invocation may run.
    timeout = seconds(host["functionTimeout"])
    # ... including Cadre's in-function retry wait (CADRE_FUNCTIONS_RETRY_WAIT_SECONDS).
    wait = Settings().functions.retry_wait_seconds
    assert seconds(service_bus["maxAutoLockRenewalDuration"]) >= timeout + wait
    assert seconds(service_bus["sessionIdleTimeout"]) <= 10
    assert service_bus["maxConcurrentSessions"] >= 1
    # The in-invocation retry wait stays well inside the default 60 s lock.
    assert Settings().functions.retry_wait_seconds < 60
    # The API's routes are /api/...: no extra Functions route prefix in front of them.
    assert host["extensions"]["http"]["routePrefix"] == ""
    assert host["telemetryMode"] == "OpenTelemetry"


def test_requirements_hold_what_the_deployed_app_imports() -> None:
    listed = {
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = {"azure-functions", "azure-servicebus", "azure-cosmos", "azure-identity"}
    needed |= {"aiohttp", "pydantic", "opentelemetry-api", "fastapi"}
    assert needed <= listed, sorted(needed - listed)


def test_runtime_from_settings_wires_cosmos_and_service_bus_without_io() -> None:
    env = {
        "CADRE_COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
        "CADRE_COSMOS_KEY": "a2V5",
        "CADRE_COSMOS_CONTAINER": "agents",
        "ServiceBusConnection": "Endpoint=sb://ns.servicebus.windows.net/;"
        "SharedAccessKeyName=k;SharedAccessKey=v",
        "CADRE_SERVICEBUS_TOPIC": "team-topic",
        "CADRE_MAX_ATTEMPTS": "4",
        "CADRE_FUNCTIONS_RETRY_WAIT_SECONDS": "12",
    }
    runtime = FunctionsRuntime.from_settings(Settings.from_env(env))
    assert isinstance(runtime.store, CosmosStore)
    assert (runtime.store.endpoint, runtime.store.container_name) == (
        "https://acct.documents.azure.com:443/",
        "agents",
    )
    assert isinstance(runtime.transport, ServiceBusTransport)
    assert runtime.transport.topic == runtime.topic == "team-topic"
    assert runtime.processor.policy.max_attempts == 4 and runtime.max_wait == 12.0
    assert "cadre.team" in runtime.registry.types  # the app's agents are loaded


@pytest.fixture(scope="module")
def azurite() -> Iterator[Any]:
    from tests.functions.azurite import start_azurite

    server = start_azurite()
    if isinstance(server, str):
        unavailable(server)
    yield server
    server.stop()


def test_development_storage_gives_the_host_its_containers_and_leases(azurite: Any) -> None:
    """The Functions host keeps function keys and its primary-host lock (a blob lease) in
    AzureWebJobsStorage; ``UseDevelopmentStorage=true`` is Azurite's well-known account."""
    storage = pytest.importorskip("azure.storage.blob")
    from azure.core.exceptions import ResourceExistsError

    development = storage.BlobServiceClient.from_connection_string("UseDevelopmentStorage=true")
    assert development.url == "http://127.0.0.1:10000/devstoreaccount1/"
    # The same account and key, on this test's port (10000 may be taken on a shared machine).
    client = storage.BlobServiceClient(
        f"http://127.0.0.1:{azurite.port}/devstoreaccount1",
        credential={
            "account_name": development.credential.account_name,
            "account_key": development.credential.account_key,
        },
    )
    hosts = client.create_container("azure-webjobs-hosts")
    client.create_container("azure-webjobs-secrets").upload_blob(
        "cadre-app/host.json", b'{"masterKey": {"value": "local"}}'
    )
    lock = hosts.upload_blob("locks/cadre-app/host", b"")
    lease = lock.acquire_lease(lease_duration=15)
    with pytest.raises(ResourceExistsError):  # a second host instance cannot be primary
        lock.acquire_lease(lease_duration=15)
    lease.release()
    lock.acquire_lease(lease_duration=15).release()
    names = [c.name for c in client.list_containers()]
    assert names == ["azure-webjobs-hosts", "azure-webjobs-secrets"]


def test_worker_local_delivery_and_relay_settings_are_read_and_checked() -> None:
    from cadre.errors import ConfigurationError
    from cadre.hosts.worker import config_from_settings
    from cadre.settings import Settings

    default = config_from_settings(Settings.from_env({}))
    assert (default.local_delivery, default.relay_after) == (True, 5.0)
    env = {"CADRE_LOCAL_DELIVERY": "false", "CADRE_RELAY_AFTER_SECONDS": "0.5"}
    config = config_from_settings(Settings.from_env(env))
    assert (config.local_delivery, config.relay_after) == (False, 0.5)
    with pytest.raises(ConfigurationError, match="CADRE_LOCAL_DELIVERY='maybe'"):
        Settings.from_env({"CADRE_LOCAL_DELIVERY": "maybe"})
    with pytest.raises(ConfigurationError, match="CADRE_RELAY_AFTER_SECONDS"):
        Settings.from_env({"CADRE_RELAY_AFTER_SECONDS": "-1"})


def test_local_settings_show_the_key_and_the_identity_forms_as_alternatives() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())
    values, identity = example["Values"], example["IdentityInsteadOfKeys"]
    # Values holds one form only: the connection string and the key ...
    assert values["ServiceBusConnection"].startswith("Endpoint=sb://")
    assert values["CADRE_COSMOS_KEY"]
    assert "ServiceBusConnection__fullyQualifiedNamespace" not in values
    # ... and the identity form is the alternative beside it, never mixed in.
    assert identity["ServiceBusConnection__fullyQualifiedNamespace"].endswith(
        ".servicebus.windows.net"
    )
    assert "ServiceBusConnection" not in identity and "CADRE_COSMOS_KEY" not in identity
    swapped = {
        k: v for k, v in values.items() if k not in ("ServiceBusConnection", "CADRE_COSMOS_KEY")
    }
    swapped.update({k: v for k, v in identity.items() if k != "about"})
    settings = Settings.from_env(swapped)
    assert settings.azure.servicebus_connection is None and settings.azure.servicebus_namespace
    assert settings.azure.cosmos_key is None


def test_the_delivery_limit_and_the_probe_port_are_off_unless_set() -> None:
    from cadre.errors import ConfigurationError

    workers = Settings.from_env({}).workers
    assert (workers.delivery_limit, workers.health_port) == (None, None)
    workers = Settings.from_env({"CADRE_DELIVERY_LIMIT": "5", "CADRE_HEALTH_PORT": "0"}).workers
    assert (workers.delivery_limit, workers.health_port) == (5, 0)
    with pytest.raises(ConfigurationError, match="CADRE_DELIVERY_LIMIT"):
        Settings.from_env({"CADRE_DELIVERY_LIMIT": "0"})
    from cadre.hosts.worker import config_from_settings

    config = config_from_settings(Settings.from_env({"CADRE_DELIVERY_LIMIT": "3"}))
    assert config.delivery_limit == 3 and config.health_port is None
