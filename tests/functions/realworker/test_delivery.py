"""Whole tasks and single messages through the real worker: HTTP in, Service Bus trigger
invocations settled as the extension settles them (autoCompleteMessages), state in Cosmos DB."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cadre.envelope import Envelope, derive_id
from cadre.ids import AgentId
from cadre.messages import Message
from cadre.transports.servicebus import to_message
from messages import AddNote
from tests.functions.bus import FakeServiceBus
from tests.functions.conftest import MAX_ATTEMPTS, TEST_APP
from tests.functions.flaky_agents import Poke
from tests.functions.realworker.conftest import unique
from tests.support.functions_host.broker import ServiceBusBroker
from tests.support.functions_host.host import FunctionsHost

pytestmark = pytest.mark.timeout(120)


def envelope_to(recipient: AgentId, message: Message, **extra: Any) -> Envelope:
    """An envelope as another agent of a task would have sent it."""
    task = extra.pop("task_id", unique("task"))
    return Envelope(
        id=extra.pop("id", unique("env")),
        message=message.message_name,
        version=message.message_version,
        payload=message.model_dump(mode="json"),
        task_id=task,
        recipient=str(recipient),
        sender=f"cadre.inbox/{task}",
        created_at=datetime.now(UTC),
        **extra,
    )


async def state_of(store: Any, agent: AgentId) -> Any:
    record = await store.load(agent)
    return json.loads(record.state) if record.state else None


async def local_transcript(team: str, task: str) -> list[tuple[str, str, str]]:
    """The same task on the local runtime (in memory), as (source, kind, content)."""
    from cadre import LocalRuntime
    from cadre.apps import load_app
    from cadre.teams import Tasks

    load_app(TEST_APP.split(","))
    async with LocalRuntime() as runtime:
        tasks = Tasks(runtime)
        task_id = await tasks.submit(team, task)
        await runtime.run_until_idle()
        return [(m.source, m.kind, m.content) for m in await tasks.messages(task_id)]


async def test_a_team_task_runs_from_http_through_service_bus_with_the_local_transcript(
    functions_host: FunctionsHost, broker: ServiceBusBroker, worker_store: Any
) -> None:
    task = f"Plan a day in Lisbon ({unique('trip')})"
    accepted = await functions_host.http("POST", "api/tasks", {"team": "default", "task": task})
    assert accepted.status == 202, accepted.body
    task_id = accepted.json()["task_id"]
    queued = await functions_host.http("GET", f"api/tasks/{task_id}")
    assert queued.json()["status"] == "queued"  # nothing delivered yet

    deliveries = await broker.run()

    done = (await functions_host.http("GET", f"api/tasks/{task_id}")).json()
    assert done["status"] == "completed" and done["result"] and done["error"] is None, done
    page = (await functions_host.http("GET", f"api/tasks/{task_id}/messages")).json()
    transcript = [(m["source"], m["kind"], m["content"]) for m in page["messages"]]
    assert transcript == await local_transcript("default", task)
    # Every message was one completed delivery, in its subscription's function.
    assert deliveries == len(broker.deliveries) == len(broker.completed())
    assert all(d.delivery_count == 1 for d in broker.deliveries)
    assert {"cadre.team", "planner", "writer", "critic"} <= {
        d.subscription for d in broker.deliveries
    }
    assert broker.dead_letters == [] and broker.unrouted == []
    assert [
        letter for letter in await worker_store.list_dead_letters() if letter.task_id == task_id
    ] == []


async def test_a_failing_participant_is_dead_lettered_by_cadre_and_the_task_fails_with_the_reason(
    functions_host: FunctionsHost, broker: ServiceBusBroker, worker_store: Any
) -> None:
    accepted = await functions_host.http("POST", "api/tasks", {"team": "fragile", "task": "x"})
    task_id = accepted.json()["task_id"]
    await broker.run()
    view = (await functions_host.http("GET", f"api/tasks/{task_id}")).json()
    assert view["status"] == "failed" and "the breaker always breaks" in view["error"]
    [letter] = [d for d in await worker_store.list_dead_letters() if d.task_id == task_id]
    assert (letter.reason, letter.attempts) == ("handler_failed", MAX_ATTEMPTS)
    turns = [d for d in broker.deliveries if d.subscription == "fntest.breaker"]
    # Abandoned and redelivered (DeliveryCount + 1) until Cadre's last attempt completes it.
    assert [(d.delivery_count, d.settlement) for d in turns] == [
        (1, "abandoned"),
        (2, "abandoned"),
        (3, "completed"),
    ]
    assert broker.dead_letters == []  # Cadre's dead letter came before maxDeliveryCount


async def test_a_failing_handler_is_redelivered_with_the_next_delivery_count_until_it_succeeds(
    broker: ServiceBusBroker, worker_store: Any
) -> None:
    flaky = AgentId("fntest.flaky", unique("f"))
    sent = envelope_to(flaky, Poke(fail_times=2))
    broker.accept(to_message(sent))
    await broker.run()
    assert [(d.delivery_count, d.settlement) for d in broker.deliveries] == [
        (1, "abandoned"),
        (2, "abandoned"),
        (3, "completed"),
    ]
    assert "failing on purpose (attempt 2)" in (broker.deliveries[1].invocation.error or "")
    assert await state_of(worker_store, flaky) == {"pokes": 1}


async def test_a_subscription_below_cadres_attempts_dead_letters_in_service_bus(
    broker: ServiceBusBroker, worker_store: Any
) -> None:
    """maxDeliveryCount at or below CADRE_MAX_ATTEMPTS (the misconfiguration docs/azure.md
    warns about): Service Bus dead-letters the message before Cadre can record why."""
    broker.max_delivery_count = MAX_ATTEMPTS - 1
    flaky = AgentId("fntest.flaky", unique("f"))
    sent = envelope_to(flaky, Poke(fail_times=99))
    broker.accept(to_message(sent))
    await broker.run()
    assert [d.settlement for d in broker.deliveries] == ["abandoned", "dead-lettered"]
    [dead] = broker.dead_letters
    assert (dead.subscription, dead.message.message_id) == ("fntest.flaky", sent.id)
    assert dead.reason == "MaxDeliveryCountExceeded"
    assert "failing on purpose (attempt 2)" in dead.description
    assert [d for d in await worker_store.list_dead_letters() if d.id == sent.id] == []


async def test_a_redelivered_message_has_one_effect_through_the_real_worker(
    functions_host: FunctionsHost,
    broker: ServiceBusBroker,
    worker_store: Any,
    worker_bus: FakeServiceBus,
) -> None:
    notebook = AgentId("notebook", unique("nb"))
    message = to_message(envelope_to(notebook, AddNote(text="once")))
    broker.accept(message)
    await broker.run()
    sent = len(worker_bus.sent)
    # The completion was lost (lock expired): Service Bus delivers the message again.
    again = broker.deliveries[0]
    from tests.support.functions_host.encoding import ReceivedMessage

    redelivered = ReceivedMessage(
        body=b"".join(message.body),
        message_id=again.message_id,
        session_id=again.session_id,
        application_properties=dict(message.application_properties or {}),
        delivery_count=2,
    )
    invocation = await functions_host.invoke_service_bus("agent_notebook", redelivered)
    assert invocation.succeeded, invocation.error
    assert await state_of(worker_store, notebook) == {"notes": ["once"], "reminders": []}
    assert len(worker_bus.sent) == sent  # nothing published twice


async def test_a_publish_that_fails_after_the_save_is_redelivered_and_published_once(
    broker: ServiceBusBroker, worker_store: Any, worker_bus: FakeServiceBus
) -> None:
    notebook = AgentId("notebook", unique("nb"))
    sent = envelope_to(notebook, AddNote(text="kept"))
    worker_bus.fail_sends = 1  # saved with its outbox; the publish then fails (a crash there)
    broker.accept(to_message(sent))
    await broker.run()
    first, second, *inbox = broker.deliveries
    assert (first.subscription, first.settlement) == ("notebook", "abandoned")
    assert "will be redelivered" in (first.invocation.error or "")
    assert (second.subscription, second.delivery_count, second.settlement) == (
        "notebook",
        2,
        "completed",
    )
    assert await state_of(worker_store, notebook) == {"notes": ["kept"], "reminders": []}
    # The reply went out once, with the id derived from the incoming one.
    assert [(d.subscription, d.message_id) for d in inbox] == [
        ("cadre.inbox", derive_id(sent.id, 0))
    ]
    assert broker.duplicates == []


async def test_a_body_that_is_not_an_envelope_is_dead_lettered_at_its_first_delivery(
    broker: ServiceBusBroker, worker_store: Any
) -> None:
    from azure.servicebus import ServiceBusMessage

    key = unique("garbled")
    garbled = ServiceBusMessage(
        b"this is not an envelope",
        message_id=key,
        session_id=key,
        application_properties={"cadre_agent_type": "notebook"},
        content_type="application/json",
    )
    broker.accept(garbled)
    await broker.run()
    [delivery] = broker.deliveries
    assert (delivery.delivery_count, delivery.settlement) == (1, "completed")  # not retried
    [letter] = [
        d for d in await worker_store.list_dead_letters() if d.body == b"this is not an envelope"
    ]
    assert (letter.reason, letter.attempts) == ("envelope_invalid", 1)


async def test_one_session_gets_one_message_at_a_time_in_order_while_sessions_run_side_by_side(
    broker: ServiceBusBroker, worker_store: Any
) -> None:
    first, second = AgentId("notebook", unique("nb")), AgentId("notebook", unique("nb"))
    texts = [f"note {n}" for n in range(6)]
    for text in texts:
        for agent in (first, second):
            broker.accept(to_message(envelope_to(agent, AddNote(text=text))))
    await broker.run()
    for agent in (first, second):
        assert await state_of(worker_store, agent) == {"notes": texts, "reminders": []}
    sessions = {d.session_id for d in broker.deliveries if d.subscription == "notebook"}
    assert sessions == {first.key, second.key}
    assert all(d.settlement == "completed" for d in broker.deliveries)


async def test_a_timer_is_a_scheduled_message_delivered_when_it_is_due(
    broker: ServiceBusBroker, worker_store: Any
) -> None:
    notebook = AgentId("notebook", unique("nb"))
    broker.accept(to_message(envelope_to(notebook, AddNote(text="call", remind_in_seconds=3600))))
    await broker.run()
    assert await state_of(worker_store, notebook) == {"notes": ["call"], "reminders": []}
    assert broker.release_scheduled() == 1
    await broker.run()
    assert await state_of(worker_store, notebook) == {"notes": ["call"], "reminders": ["call"]}
