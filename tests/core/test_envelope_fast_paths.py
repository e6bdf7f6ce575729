"""The hot path's shortcuts keep envelopes independent values."""

from __future__ import annotations

from datetime import UTC, datetime

from cadre.envelope import Envelope


def trusted(envelope_id: str) -> Envelope:
    return Envelope.trusted(
        id=envelope_id,
        message="test.Note",
        version=1,
        payload={"text": "x"},
        task_id="t",
        recipient="recorder/a",
        topic=None,
        sender=None,
        reply_to=None,
        causation_id=None,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        not_before=None,
        attempt=1,
        traceparent=None,
    )


def test_copying_a_trusted_envelope_changes_neither_it_nor_its_siblings() -> None:
    first, second = trusted("a"), trusted("b")
    retried = first.model_copy(update={"attempt": 2})
    assert (first.attempt, second.attempt, retried.attempt) == (1, 1, 2)
    assert first.model_fields_set == second.model_fields_set == set(Envelope.model_fields)
    assert Envelope.from_bytes(retried.to_bytes()) == retried
