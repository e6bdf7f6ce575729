"""A standing fuzzer over what a host hands `Processor.process`: arbitrary bytes, arbitrary
JSON, and envelope-shaped JSON with arbitrary fields and text. Every outcome is a handled
step, a duplicate, a dead letter, or (only for a handler failing on purpose) a retry; no
exception escapes, on every store the workers and the local runtime use."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadre.processing import Disposition, Processor, RetryPolicy
from cadre.step import Step
from tests.support.contracts import make_registry
from tests.support.faults import RecordingTransport

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,  # the same cases every run: CI does not flake
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any code point; NUL, lone surrogates, control and 4-byte characters often
text = st.text(
    st.sampled_from(["\x00", "\ud800", "\udfff", "\x07", "\U0001d11e", "é", "a"])
    | st.characters(codec=None, exclude_categories=()),
    max_size=30,
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
payloads = st.one_of(
    json_values,
    st.fixed_dictionaries({"amount": st.integers() | text}),
    st.fixed_dictionaries({"text": text}),
    st.fixed_dictionaries({"times": st.integers(-2, 5)}),
)
PAYLOADS = {  # each message with a payload of its contract, and where it goes
    "test.Add": (st.fixed_dictionaries({"amount": st.integers(-(2**70), 2**70)}), "counter/a"),
    "test.Note": (st.fixed_dictionaries({"text": text}), "recorder/a"),  # any text
    "test.Fail": (st.fixed_dictionaries({"times": st.integers(-2, 3)}), "counter/a"),
}


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope, or one with one field replaced by any JSON value."""
    message = draw(st.sampled_from(sorted(PAYLOADS)))
    payload, recipient = PAYLOADS[message]
    envelope = {
        "id": draw(st.just("e1") | st.uuids().map(lambda u: u.hex)),  # e1: a duplicate
        "message": message,
        "version": 1,
        "payload": draw(payload),
        "task_id": draw(st.one_of(st.just("t1"), st.just("t2"), text)),
        "recipient": recipient,
        "created_at": "2026-01-01T00:00:00+00:00",
        "attempt": draw(st.integers(1, 3)),
        "sender": "recorder/a",  # Add replies
    }
    if draw(st.integers(0, 2)) == 0:
        envelope[draw(st.sampled_from([*envelope, "extra"]))] = draw(json_values)
    return envelope


def _dumps(value: Any) -> bytes:
    """JSON as a client could write it: lone surrogates spelt as escapes."""
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dumps),
    envelopes().map(_dumps),
    envelopes().map(_dumps),
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest) -> Any:
    """The stores a step runs on in the local runtime and the workers."""
    return request.getfixturevalue(f"{request.param}_store")


@FUZZ
@given(body=bodies)
async def test_any_bytes_are_handled_a_duplicate_or_a_dead_letter(store: Any, body: bytes) -> None:
    step = Step(store, RecordingTransport(), registry=make_registry())
    processor = Processor(step, policy=RetryPolicy(max_attempts=2, base_delay=0.0))
    processed = await processor.process(body)
    if processed.disposition is Disposition.RETRY:  # only a handler that fails on purpose
        assert json.loads(body)["message"] == "test.Fail"
    else:
        assert processed.disposition in (
            Disposition.HANDLED,
            Disposition.DUPLICATE,
            Disposition.DEAD_LETTERED,
        )
