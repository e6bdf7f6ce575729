"""What the real Python worker makes of ``function_app.py`` and of what the host sends:
indexing, bindings, the host's encodings, a broken app, and the cold start."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.functions.conftest import ROOT
from tests.functions.realworker.conftest import (
    COLD_START,
    build_app_dir,
    subscriptions,
    unique,
    worker_environment,
)
from tests.support.functions_host import encoding, worker_env
from tests.support.functions_host.host import FunctionsHost, WorkerFailed

pytestmark = pytest.mark.timeout(120)


def test_the_worker_runs_the_python_that_infra_deploys_with_the_pinned_packages(
    functions_host: FunctionsHost, worker_python: Path
) -> None:
    metadata = functions_host.worker_init_response.worker_metadata
    assert (metadata.runtime_name, metadata.runtime_version) == (
        "python",
        worker_env.PYTHON_VERSION,
    )
    pins = worker_env.pinned()
    assert metadata.worker_version == pins["azure-functions-runtime"]
    installed = worker_env.installed(worker_python)
    assert {name: installed.get(name) for name in pins} == pins
    main_bicep = (ROOT / "infra" / "main.bicep").read_text()
    assert f"param pythonVersion string = '{worker_env.PYTHON_VERSION}'" in main_bicep


def test_the_worker_indexes_every_function_with_the_bindings_the_app_declares(
    functions_host: FunctionsHost, app_dir: Path
) -> None:
    agents = subscriptions(app_dir)
    assert set(functions_host.functions) == {"http_api", *agents.values()}
    for agent_type, name in agents.items():
        [binding] = functions_host.functions[name].bindings
        assert binding == {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": "ServiceBusConnection",
            "topicName": "cadre",
            "subscriptionName": agent_type,
            "isSessionsEnabled": True,
        }
    # The list came from cadre-functions.json (a stale file would have been rewritten).
    assert functions_host.index_file_unchanged  # type: ignore[attr-defined]


def test_the_http_function_needs_the_function_key_on_every_route(
    functions_host: FunctionsHost,
) -> None:
    trigger, output = functions_host.functions["http_api"].bindings
    assert trigger["type"] == "httpTrigger" and trigger["authLevel"] == "FUNCTION"
    assert trigger["route"] == "{*path}"
    assert set(trigger["methods"]) >= {"GET", "POST", "PUT", "DELETE"}
    assert output == {"direction": "OUT", "type": "http", "name": "$return"}


def test_an_app_that_fails_to_index_is_refused_with_the_reason(
    worker_python: Path,
    generated_protos: Path,
    tmp_path: Path,
    cosmos_server: Any,
    worker_container: str,
) -> None:
    app = build_app_dir(tmp_path / "app", "agents")
    (app / "cadre-functions.json").unlink()  # so the worker must import the app modules
    env = worker_environment(worker_container, cosmos_server.endpoint, CADRE_APP="no_such_app")
    env.pop("CADRE_STANDIN_WIRING")
    host = FunctionsHost(worker_python, app, generated=generated_protos, env=env)
    with pytest.raises(WorkerFailed) as failed:
        host.start()
    message = str(failed.value)
    assert "WorkerInitRequest (indexing function_app.py) failed" in message
    assert "cannot find the app module 'no_such_app' (CADRE_APP)" in message
    assert host.process is not None and host.process.poll() is not None  # stopped


def poke(prefix: str, *, fail_times: int, delivery_count: int = 1) -> encoding.ReceivedMessage:
    """A `Poke` for a fresh `fntest.flaky` agent, as Service Bus would hold it."""
    from cadre.envelope import Envelope
    from cadre.transports.servicebus import to_message
    from tests.functions.flaky_agents import Poke

    key = unique(prefix)
    envelope = Envelope(
        id=unique("env"),
        message=Poke.message_name,
        version=Poke.message_version,
        payload=Poke(fail_times=fail_times).model_dump(mode="json"),
        task_id=key,
        recipient=f"fntest.flaky/{key}",
        sender=f"cadre.inbox/{key}",
        created_at=datetime.now(UTC),
    )
    sent = to_message(envelope)
    return encoding.ReceivedMessage(
        body=b"".join(sent.body),
        message_id=str(sent.message_id),
        session_id=sent.session_id,
        application_properties=dict(sent.application_properties or {}),
        delivery_count=delivery_count,
    )


async def test_numbers_travel_as_json_because_the_worker_cannot_decode_int_typed_data(
    functions_host: FunctionsHost,
) -> None:
    received = poke("int", fail_times=0)
    pb = functions_host.pb
    data, meta = encoding.service_bus_trigger(pb, received, "agent_fntest_flaky")
    assert meta["DeliveryCount"] == pb.TypedData(json="1")
    assert json.loads(meta["EnqueuedTimeUtc"].json).endswith("Z")
    assert not set(encoding.NEVER_SENT) & set(meta)
    meta["DeliveryCount"].CopyFrom(pb.TypedData(int=1))  # what the host never does
    wrong = await functions_host.invoke("agent_fntest_flaky", {"msg": data}, meta)
    assert not wrong.succeeded
    assert "unsupported TypeData kind: int" in (wrong.error or "")


async def test_the_delivery_count_the_extension_sends_is_cadres_attempt(
    functions_host: FunctionsHost, worker_store: Any
) -> None:
    """Poke fails while the attempt is at most 1: delivered with DeliveryCount 2 (JSON), it
    succeeds at once, so the count reached Cadre through the worker's binding."""
    from cadre.ids import AgentId

    received = poke("count", fail_times=1, delivery_count=2)
    key = str(received.session_id)
    invocation = await functions_host.invoke_service_bus("agent_fntest_flaky", received)
    assert invocation.succeeded, invocation.error
    record = await worker_store.load(AgentId("fntest.flaky", key))
    assert json.loads(record.state) == {"pokes": 1}


async def test_the_cold_start_is_measured_and_reported(functions_host: FunctionsHost) -> None:
    result = await functions_host.http("GET", "api/health")
    assert result.status == 200
    timings = functions_host.timings
    assert timings.first_invocation is not None and timings.first_invocation_function
    assert timings.process_to_start_stream is not None and timings.worker_init is not None
    # Generous bounds: a cold start here takes about a second; a regression takes tens.
    assert timings.process_to_start_stream + timings.worker_init < 30
    assert timings.first_invocation < 30
    report = {
        "python": worker_env.PYTHON_VERSION,
        "azure-functions-runtime": worker_env.pinned()["azure-functions-runtime"],
        "process_start_to_StartStream_s": round(timings.process_to_start_stream, 3),
        "WorkerInitRequest_indexing_s": round(timings.worker_init, 3),
        "FunctionsMetadataRequest_s": round(timings.metadata or 0, 3),
        "FunctionLoadRequests_s": round(timings.load or 0, 3),
        "first_invocation_s": round(timings.first_invocation, 3),
        "first_invocation_function": timings.first_invocation_function,
    }
    COLD_START.update(report)
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "functions-cold-start.json").write_text(json.dumps(report, indent=2) + "\n")
