"""Fixtures of the real-worker suite: ``function_app.py`` in the real Python worker
(``azure-functions-runtime`` on Python 3.13), driven by the host stand-in over FunctionRpc;
state on the local Cosmos DB server; Service Bus played by the stand-in's broker.

One worker serves the whole session (a cold start costs seconds): every test owns its tasks
and agent keys, and reads only those back. Each test gets its own broker (settlement state)
attached to the session's bus. Missing Python 3.13 or the worker's packages skips locally and
fails in CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unavailable
from tests.functions.bus import FakeServiceBus
from tests.functions.conftest import MAX_ATTEMPTS, ROOT, TEST_APP
from tests.support.functions_host import worker_env
from tests.support.functions_host.broker import ServiceBusBroker
from tests.support.functions_host.host import FunctionsHost

DATABASE = "cadre-tests"
RETRY_WAIT_SECONDS = 0.05
MAX_DELIVERY_COUNT = 10
"""infra/'s default ``serviceBusMaxDeliveryCount``: above ``CADRE_MAX_ATTEMPTS``."""


def build_app_dir(folder: Path, app_modules: str) -> Path:
    """A deployment folder: ``function_app.py`` and its ``cadre-functions.json`` for
    `app_modules`, written as ``python -m cadre.hosts.functions_index`` writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "function_app.py", folder / "function_app.py")
    subprocess.run(
        [sys.executable, "-m", "cadre.hosts.functions_index", str(folder)],
        cwd=ROOT,
        env={**os.environ, "CADRE_APP": app_modules},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder


def worker_environment(container: str, endpoint: str, **extra: str) -> dict[str, str]:
    """The worker process's environment: the app settings of local.settings.json, plus the
    stand-in's wiring (see tests/support/functions_host/worker_wiring.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CADRE_", "PYTHON"))}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "CADRE_APP": TEST_APP,
            "CADRE_MODEL": "offline",
            "CADRE_SERVICEBUS_TOPIC": "cadre",
            "ServiceBusConnection": "Endpoint=sb://standin.servicebus.windows.net/;"
            "SharedAccessKeyName=k;SharedAccessKey=dg==",
            "CADRE_COSMOS_ENDPOINT": endpoint,
            "CADRE_TEST_COSMOS_ENDPOINT": endpoint,
            "CADRE_COSMOS_DATABASE": DATABASE,
            "CADRE_COSMOS_CONTAINER": container,
            "CADRE_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "CADRE_RETRY_BASE_SECONDS": "0.01",
            "CADRE_FUNCTIONS_RETRY_WAIT_SECONDS": str(RETRY_WAIT_SECONDS),
            "CADRE_STANDIN_WIRING": "tests.support.functions_host.worker_wiring:install",
        }
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def worker_python() -> Path:
    """Python 3.13 with the worker's packages (skips locally, fails in CI, when missing)."""
    python = worker_env.worker_python()
    problem = worker_env.problem(python)
    if problem:
        unavailable(problem)
    return python


@pytest.fixture(scope="session")
def generated_protos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FunctionRpc subset and the loopback, generated with grpcio-tools."""
    try:
        import grpc  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError:
        unavailable("grpcio and grpcio-tools for the host stand-in (pip install -e '.[dev]')")
    from tests.support.functions_host import protos

    return protos.generate(tmp_path_factory.mktemp("functionrpc"))


@pytest.fixture(scope="session")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployed folder of the test app (the repo's agents and the flaky ones)."""
    return build_app_dir(tmp_path_factory.mktemp("function-app"), TEST_APP)


@pytest.fixture(scope="session")
def worker_container(cosmos_server: Any) -> Iterator[str]:
    """The session's Cosmos DB container (the worker's store and the tests' reads)."""
    from tests.support.cosmos_server import open_test_store

    async def create() -> str:
        store = await open_test_store(cosmos_server)
        name: str = store.container_name
        await store.close()
        return name

    name = asyncio.run(create())
    yield name

    async def drop() -> None:
        store = await open_store(cosmos_server, name)
        await store.drop_container()
        await store.close()

    asyncio.run(drop())


async def open_store(cosmos_server: Any, container: str) -> Any:
    """A Cosmos store on an existing container of the local server."""
    from tests.support.cosmos_server import EMULATOR_KEY, _local_server_store_class

    return _local_server_store_class()(
        cosmos_server.endpoint,
        key=EMULATOR_KEY,
        database=DATABASE,
        container=container,
        client_options={"enable_endpoint_discovery": False},
    )


@pytest.fixture(scope="session")
def worker_bus() -> FakeServiceBus:
    """What the worker's Cadre sends, recorded at the SDK boundary (tests/functions/bus.py)."""
    return FakeServiceBus()


def receive_batch(bus: FakeServiceBus, topic: str, sent: list[Any]) -> str:
    """The loopback's receiving end: rebuild the SDK messages the worker sent and hand them
    to `bus` (its listeners are the brokers); an injected failure answers an error."""
    from azure.servicebus import ServiceBusMessage

    if bus.fail_sends:
        bus.fail_sends -= 1
        return "connection lost (injected)"
    messages = []
    for m in sent:
        message = ServiceBusMessage(
            m.body,
            message_id=m.message_id,
            session_id=m.session_id or None,
            application_properties=json.loads(m.application_properties),
            content_type=m.content_type or None,
            subject=m.subject or None,
            correlation_id=m.correlation_id or None,
        )
        if m.scheduled_enqueue_time_utc:
            due = datetime.fromisoformat(m.scheduled_enqueue_time_utc)
            message.scheduled_enqueue_time_utc = due
        messages.append(message)
    bus.batches.append((topic, messages))
    for message in messages:
        bus.sent.append(message)
        for listener in list(bus.listeners):
            listener(message)
    return ""


@pytest.fixture(scope="session")
def functions_host(
    worker_python: Path,
    generated_protos: Path,
    app_dir: Path,
    cosmos_server: Any,
    worker_container: str,
    worker_bus: FakeServiceBus,
) -> Iterator[FunctionsHost]:
    """The real worker with the test app, initialised, indexed and loaded."""
    index_before = (app_dir / "cadre-functions.json").read_text()
    host = FunctionsHost(
        worker_python,
        app_dir,
        generated=generated_protos,
        env=worker_environment(worker_container, cosmos_server.endpoint),
        on_batch=lambda topic, sent: receive_batch(worker_bus, topic, sent),
    )
    host.start()
    host.index_file_unchanged = (app_dir / "cadre-functions.json").read_text() == index_before  # type: ignore[attr-defined]
    yield host
    host.stop()


def subscriptions(app_dir: Path) -> dict[str, str]:
    """Agent type (subscription) -> function name, from the app's index file."""
    index = json.loads((app_dir / "cadre-functions.json").read_text())
    return {f["agent_type"]: f["function_name"] for f in index["functions"]}


@pytest.fixture
def broker(
    functions_host: FunctionsHost, worker_bus: FakeServiceBus, app_dir: Path
) -> Iterator[ServiceBusBroker]:
    """A broker for this test: it receives what is sent from now on."""
    broker = ServiceBusBroker(
        functions_host, subscriptions(app_dir), max_delivery_count=MAX_DELIVERY_COUNT
    )
    worker_bus.listeners.append(broker.accept)
    yield broker
    worker_bus.listeners.remove(broker.accept)
    worker_bus.fail_sends = 0


@pytest.fixture
async def worker_store(cosmos_server: Any, worker_container: str) -> AsyncIterator[Any]:
    """The worker's Cosmos DB container, read from the test (its own client)."""
    store = await open_store(cosmos_server, worker_container)
    yield store
    await store.close()


def unique(prefix: str) -> str:
    """A key no other test of the session uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


COLD_START: dict[str, Any] = {}
"""The cold start measured in this session (test_the_cold_start_is_measured_and_reported)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report the real worker's cold start at the end of the run."""
    if COLD_START:
        terminalreporter.write_line(
            "real Functions worker, cold start (s): "
            + ", ".join(f"{k}={v}" for k, v in COLD_START.items())
        )
