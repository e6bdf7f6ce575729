"""Model calls are at-least-once, their effects exactly-once: a crash before the save calls
the model again on redelivery, and the transcript and reply still appear once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cadre import AgentId, Registry
from cadre.envelope import Envelope
from cadre.models import ReplayClient
from cadre.step import Outcome, Step
from cadre.stores.memory import MemoryStore
from cadre.teams import Assistant, AssistantAgent, RequestTurn
from tests.support.faults import Crash, CrashingStore, RecordingTransport


def turn_envelope() -> Envelope:
    request = RequestTurn(turn=1, participant="writer", messages=[])
    return Envelope(
        id="e1",
        message=request.message_name,
        version=request.message_version,
        payload=request.model_dump(mode="json"),
        task_id="t1",
        recipient="writer/t1",
        reply_to="cadre.team/t1",
        created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize("point", ["before_save", "after_save"])
async def test_a_crash_calls_the_model_again_or_not_but_the_effect_is_once(point: str) -> None:
    model = ReplayClient(["first answer", "second answer"])
    registry = Registry()
    Assistant("writer", model=model).register(registry)
    store, sent = MemoryStore(), RecordingTransport()
    with pytest.raises(Crash):
        await Step(CrashingStore(store, point=point), sent, registry=registry)(turn_envelope())
    redelivered = await Step(store, sent, registry=registry)(turn_envelope())

    record = await store.load(AgentId("writer", "t1"))
    state = AssistantAgent.State.model_validate_json(record.state or "{}")
    replies = {e.id: e for e in sent.sent}
    [reply] = replies.values()  # republished with the same id: one effect
    if point == "before_save":  # nothing was stored: the model is called again
        assert redelivered.outcome is Outcome.HANDLED
        assert len(model.calls) == 2
        expected = "second answer"
    else:  # stored before the crash: the redelivery is a duplicate, no second call
        assert redelivered.outcome is Outcome.DUPLICATE
        assert len(model.calls) == 1
        expected = "first answer"
    assert [m.content for m in state.history] == [expected]
    assert reply.payload["messages"][0]["content"] == expected
