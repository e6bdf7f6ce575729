"""Fixtures of the Functions tests: the function app (with two test agents added), a
runtime on the local Cosmos DB server and a Service Bus faked at the SDK boundary, and the
loopback that plays the broker."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("azure.functions")
pytest.importorskip("azure.servicebus")

from cadre.apps import load_app
from cadre.hosts.functions import FunctionsRuntime, use_runtime
from cadre.processing import RetryPolicy
from cadre.transports.servicebus import ServiceBusTransport
from tests.functions.bus import FakeServiceBus, Loopback

ROOT = Path(__file__).resolve().parents[2]
TEST_APP = "agents,tests.functions.flaky_agents"
MAX_ATTEMPTS = 3


def load_function_app(folder: Path, env: dict[str, str], name: str) -> ModuleType:
    """Import a copy of ``function_app.py`` from `folder` with `env` set, as the Python
    worker imports it (its index file is written next to the copy, not in the repo)."""
    shutil.copy(ROOT / "function_app.py", folder / "function_app.py")
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        spec = importlib.util.spec_from_file_location(name, folder / "function_app.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return module


@pytest.fixture(scope="session")
def app_module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """``function_app`` with the test agents added (CADRE_APP)."""
    folder = tmp_path_factory.mktemp("function-app")
    # Index in a fresh interpreter, as a worker starts: this process's registry also holds
    # the agent types other test modules declared.
    subprocess.run(
        [sys.executable, "-m", "cadre.hosts.functions_index", str(folder)],
        cwd=ROOT,
        env={**os.environ, "CADRE_APP": TEST_APP},
        check=True,
        capture_output=True,
        timeout=60,
    )
    module = load_function_app(folder, {"CADRE_APP": TEST_APP}, "cadre_test_function_app")
    assert module.index.from_file
    return module


@pytest.fixture(scope="session")
def indexed(app_module: ModuleType) -> dict[str, Any]:
    """The app's functions by name (`get_functions` may run once per app object)."""
    return {fn.get_function_name(): fn for fn in app_module.app.get_functions()}


@pytest.fixture(scope="session")
def triggers(app_module: ModuleType, indexed: dict[str, Any]) -> dict[str, Any]:
    """Agent type -> the user function of its Service Bus trigger."""
    return {
        spec.agent_type: indexed[spec.function_name].get_user_function()
        for spec in app_module.index.functions
    }


@pytest.fixture
def bus() -> FakeServiceBus:
    return FakeServiceBus()


@pytest.fixture
async def functions_runtime(
    cosmos_store: Any, bus: FakeServiceBus
) -> AsyncIterator[FunctionsRuntime]:
    """The runtime every function of the app uses: the local Cosmos DB server, Service Bus
    at the SDK boundary, retries quick enough for tests. The app's modules are loaded as
    `FunctionsRuntime.from_settings` loads them (the index file spares function_app that)."""
    load_app(TEST_APP.split(","))
    transport = ServiceBusTransport(topic="cadre", client_factory=bus.client, send_timeout=10)
    policy = RetryPolicy(max_attempts=MAX_ATTEMPTS, base_delay=0.01, jitter=0.0)
    runtime = FunctionsRuntime(cosmos_store, transport, policy=policy, max_wait=0.05)
    use_runtime(runtime)
    yield runtime
    use_runtime(None)
    await transport.close()


@pytest.fixture
def loopback(
    functions_runtime: FunctionsRuntime, bus: FakeServiceBus, triggers: dict[str, Any]
) -> Loopback:
    return Loopback(bus, triggers)
