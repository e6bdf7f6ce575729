"""Each Service Bus function of the app, invoked as the Functions host invokes it: a real
``azure.functions`` Service Bus message built from a Cadre envelope, the real step against
the Cosmos DB store on the local server, and the outgoing Service Bus messages captured at
the SDK boundary (tests/functions/bus.py). Returning completes a message; raising abandons it
(Service Bus redelivers it with the delivery count + 1)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cadre.envelope import Envelope, derive_id
from cadre.errors import RetryLater
from cadre.hosts.functions import FunctionsRuntime
from cadre.ids import AgentId
from cadre.teams import Tasks
from cadre.transports.servicebus import to_message
from messages import AddNote, NoteAdded
from tests.functions.bus import (
    FakeServiceBus,
    InvocationContext,
    Loopback,
    body_of,
    functions_message,
)
from tests.functions.conftest import MAX_ATTEMPTS
from tests.functions.flaky_agents import Flaky, Poke

pytestmark = pytest.mark.timeout(60)

ALICE = AgentId("notebook", "alice")
CONTEXT = InvocationContext("agent_notebook")


def incoming(message: Any, recipient: AgentId, **extra: Any) -> Envelope:
    """An envelope as another agent would have sent it."""
    return Envelope(
        id=extra.pop("id", "env-1"),
        message=message.message_name,
        version=message.message_version,
        payload=message.model_dump(mode="json"),
        task_id="task-1",
        recipient=str(recipient),
        sender="cadre.inbox/task-1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    )


async def state_of(runtime: FunctionsRuntime, agent: AgentId) -> dict[str, Any] | None:
    import json

    record = await runtime.store.load(agent)
    return json.loads(record.state) if record.state else None


async def test_notebook_function_saves_state_and_publishes_the_reply_and_the_timer(
    triggers: dict[str, Any], functions_runtime: FunctionsRuntime, bus: FakeServiceBus
) -> None:
    envelope = incoming(AddNote(text="buy milk", remind_in_seconds=3600), ALICE)
    await triggers["notebook"](functions_message(to_message(envelope)), CONTEXT)

    assert await state_of(functions_runtime, ALICE) == {"notes": ["buy milk"], "reminders": []}
    (topic, batch_a), (_, batch_b) = bus.batches  # one batch per session
    assert topic == "cadre"
    reply, timer = sorted(batch_a + batch_b, key=lambda m: m.scheduled_enqueue_time_utc is not None)
    # The reply goes to the sender, in its session; ids derive from the incoming id (the
    # handler scheduled the reminder before it returned the reply).
    assert reply.message_id == derive_id("env-1", 1)
    assert reply.session_id == "task-1"
    assert reply.application_properties == {
        "cadre_agent_type": "cadre.inbox",
        "cadre_message": "app.NoteAdded",
        "cadre_version": 1,
        "cadre_task_id": "task-1",
        "cadre_attempt": 1,
    }
    assert reply.correlation_id == "task-1" and reply.subject == "app.NoteAdded"
    assert Envelope.from_bytes(body_of(reply)).payload == NoteAdded(count=1).model_dump()
    assert reply.scheduled_enqueue_time_utc is None
    # The reminder is a scheduled message to the notebook itself.
    assert timer.message_id == derive_id("env-1", 0)
    assert timer.session_id == "alice"
    assert timer.application_properties["cadre_agent_type"] == "notebook"
    assert timer.application_properties["cadre_message"] == "app.Remind"
    due = timer.scheduled_enqueue_time_utc
    assert timedelta(minutes=59) < due - datetime.now(UTC) <= timedelta(hours=1)


async def test_redelivered_message_completes_without_a_second_effect(
    triggers: dict[str, Any], functions_runtime: FunctionsRuntime, bus: FakeServiceBus
) -> None:
    message = to_message(incoming(AddNote(text="once"), ALICE))
    await triggers["notebook"](functions_message(message, delivery_count=1), CONTEXT)
    sent = len(bus.sent)
    await triggers["notebook"](functions_message(message, delivery_count=2), CONTEXT)  # lock lost
    assert await state_of(functions_runtime, ALICE) == {"notes": ["once"], "reminders": []}
    assert len(bus.sent) == sent == 1


async def test_a_redelivery_after_more_newer_messages_than_seen_holds_has_no_effect(
    triggers: dict[str, Any], functions_runtime: FunctionsRuntime, bus: FakeServiceBus
) -> None:
    """The lock of the first message is lost, and it comes back after 150 newer ones
    (`seen` keeps 64): the Cosmos DB store's evicted ids still know it."""
    start = datetime.now(UTC)

    def note(n: int) -> Envelope:
        envelope = incoming(AddNote(text=f"note {n}"), ALICE, id=f"env-{n}")
        return envelope.model_copy(update={"created_at": start + timedelta(microseconds=n)})

    first = to_message(note(0))
    await triggers["notebook"](functions_message(first, delivery_count=1), CONTEXT)
    for n in range(1, 151):
        await triggers["notebook"](functions_message(to_message(note(n)), 1), CONTEXT)
    await triggers["notebook"](functions_message(first, delivery_count=2), CONTEXT)
    state = await state_of(functions_runtime, ALICE)
    assert state is not None and state["notes"] == [f"note {n}" for n in range(151)]
    assert len(bus.sent) == 151  # one reply each: none for the redelivery


async def test_publish_that_fails_after_the_save_is_redelivered_with_the_same_ids(
    triggers: dict[str, Any], functions_runtime: FunctionsRuntime, bus: FakeServiceBus
) -> None:
    message = to_message(incoming(AddNote(text="kept"), ALICE))
    bus.fail_sends = 1  # the state is saved with its outbox; the publish fails
    with pytest.raises(RetryLater):
        await triggers["notebook"](functions_message(message, delivery_count=1), CONTEXT)
    assert bus.sent == []
    assert await state_of(functions_runtime, ALICE) == {"notes": ["kept"], "reminders": []}
    await triggers["notebook"](functions_message(message, delivery_count=2), CONTEXT)
    [reply] = bus.sent
    assert reply.message_id == derive_id(
        "env-1", 0
    )  # the same id as before: duplicate detection can drop a copy
    assert await state_of(functions_runtime, ALICE) == {"notes": ["kept"], "reminders": []}


async def test_unreadable_message_is_dead_lettered_and_completed_at_its_first_delivery(
    triggers: dict[str, Any], functions_runtime: FunctionsRuntime, bus: FakeServiceBus
) -> None:
    message = to_message(incoming(AddNote(text="x"), ALICE))
    raw = functions_message(message)
    garbled = type(raw)(
        body=b"\x00 not an envelope",
        message_id="garbled-1",
        session_id="alice",
        application_properties=dict(raw.application_properties),
        user_properties={},
        delivery_count=1,
        content_type="application/json",
        correlation_id=None,
    )
    await triggers["notebook"](garbled, CONTEXT)  # returns: the message is completed, not retried
    [letter] = await functions_runtime.store.list_dead_letters()
    assert (letter.reason, letter.attempts, letter.body) == (
        "envelope_invalid",
        1,
        b"\x00 not an envelope",
    )
    assert bus.sent == []


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        (incoming(NoteAdded(count=1), ALICE), "no_handler"),
        (incoming(AddNote(text="x"), AgentId("nobody", "x")), "unknown_agent_type"),
        (
            incoming(AddNote(text="x"), ALICE).model_copy(update={"message": "app.Nope"}),
            "unknown_message",
        ),
    ],
    ids=["no-handler", "unknown-agent-type", "unknown-message"],
)
async def test_message_that_cannot_be_handled_is_dead_lettered_with_its_reason_at_once(
    triggers: dict[str, Any],
    functions_runtime: FunctionsRuntime,
    bus: FakeServiceBus,
    envelope: Envelope,
    reason: str,
) -> None:
    message = functions_message(to_message(envelope))
    await triggers["notebook"](message, CONTEXT)
    [letter] = await functions_runtime.store.list_dead_letters()
    assert (letter.id, letter.reason, letter.attempts) == ("env-1", reason, 1)
    assert letter.body == envelope.to_bytes()
    assert await state_of(functions_runtime, ALICE) is None


async def test_failing_handler_is_retried_by_redelivery_until_it_succeeds(
    functions_runtime: FunctionsRuntime, loopback: Loopback
) -> None:
    flaky = AgentId("fntest.flaky", "f1")
    sent = await functions_runtime.send(flaky, Poke(fail_times=2))
    await loopback.run()
    assert loopback.completed == [("fntest.flaky", sent.id, 3)]  # abandoned twice
    assert await state_of(functions_runtime, flaky) == {"pokes": 1}
    assert await functions_runtime.store.list_dead_letters() == []


async def test_handler_out_of_attempts_is_dead_lettered_before_max_delivery_count(
    functions_runtime: FunctionsRuntime, loopback: Loopback
) -> None:
    flaky = AgentId("fntest.flaky", "f2")
    sent = await functions_runtime.send(flaky, Poke(fail_times=99))
    await loopback.run()
    assert loopback.completed == [("fntest.flaky", sent.id, MAX_ATTEMPTS)]
    assert loopback.broker_dead_letters == []  # never looped through maxDeliveryCount
    [letter] = await functions_runtime.store.list_dead_letters()
    assert (letter.id, letter.reason, letter.attempts) == (sent.id, "handler_failed", MAX_ATTEMPTS)
    assert "failing on purpose (attempt 3)" in letter.detail
    assert await state_of(functions_runtime, flaky) is None


async def test_a_team_whose_participant_keeps_failing_reports_a_failed_task(
    functions_runtime: FunctionsRuntime, loopback: Loopback
) -> None:
    tasks = Tasks(functions_runtime)
    task_id = await tasks.submit("fragile", "break something")
    await loopback.run()
    info = await tasks.status(task_id)
    assert info.status == "failed"
    assert "fntest.breaker" in (info.stop_reason or "")
    assert "the breaker always breaks" in (info.stop_reason or "")
    [letter] = await functions_runtime.store.list_dead_letters()
    assert (letter.task_id, letter.reason) == (task_id, "handler_failed")


async def test_redrive_sends_the_dead_letter_again_and_removes_it(
    functions_runtime: FunctionsRuntime, loopback: Loopback, monkeypatch: pytest.MonkeyPatch
) -> None:
    flaky = AgentId("fntest.flaky", "f3")
    monkeypatch.setattr(Flaky, "outage", True)
    sent = await functions_runtime.send(flaky, Poke())
    await loopback.run()
    [letter] = await functions_runtime.store.list_dead_letters()
    monkeypatch.setattr(Flaky, "outage", False)  # the dependency is back
    loopback.seen_ids.clear()  # later than the duplicate detection window
    redriven = await functions_runtime.redrive(letter.id)
    assert (redriven.id, redriven.attempt) == (sent.id, 1)
    assert await functions_runtime.store.list_dead_letters() == []
    await loopback.run()
    assert loopback.completed[-1] == ("fntest.flaky", sent.id, 1)
    assert await state_of(functions_runtime, flaky) == {"pokes": 1}


async def test_a_timer_is_a_scheduled_message_handled_when_it_is_due(
    functions_runtime: FunctionsRuntime, loopback: Loopback
) -> None:
    sent = await functions_runtime.send(ALICE, AddNote(text="call mum", remind_in_seconds=600))
    await loopback.run()
    assert await state_of(functions_runtime, ALICE) == {"notes": ["call mum"], "reminders": []}
    assert len(loopback.scheduled) == 1  # waiting in Service Bus, costing nothing
    assert loopback.release_scheduled() == 1  # ten minutes later
    await loopback.run()
    assert await state_of(functions_runtime, ALICE) == {
        "notes": ["call mum"],
        "reminders": ["call mum"],
    }
    inbox = await state_of(functions_runtime, AgentId("cadre.inbox", sent.task_id))
    assert inbox is not None
    assert [r["message"] for r in inbox["replies"]] == ["app.NoteAdded"]  # the reply
