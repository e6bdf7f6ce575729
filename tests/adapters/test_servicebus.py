"""Service Bus transport at the SDK boundary: no Service Bus runs here, and the SDK pointed
at anything else hangs, so a fake client/sender records the real `ServiceBusMessage` and
`ServiceBusMessageBatch` objects the transport builds. Every test has a hard timeout."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("azure.servicebus")

from azure.servicebus import ServiceBusMessageBatch

from cadre.envelope import Envelope, utcnow
from cadre.errors import ConfigurationError, EnvelopeInvalid, TransportError
from cadre.settings import Settings
from cadre.transports.servicebus import (
    ServiceBusTransport,
    session_id,
    shared_transport,
)

pytestmark = pytest.mark.timeout(20)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def envelope(n: int, recipient: str = "counter/a", **extra: Any) -> Envelope:
    return Envelope(
        id=f"env-{n}",
        message="test.Add",
        version=2,
        payload={"amount": n, "pad": extra.pop("pad", "")},
        task_id="task-1",
        recipient=recipient,
        sender="recorder/a",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **extra,
    )


class RecordingBatch:
    """A real SDK batch (its size accounting decides when it is full) that remembers what
    was added."""

    def __init__(self, max_size: int) -> None:
        self.real = ServiceBusMessageBatch(max_size_in_bytes=max_size)
        self.messages: list[Any] = []

    def add_message(self, message: Any) -> None:
        self.real.add_message(message)
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.real)


class FakeSender:
    """Stands where `ServiceBusSender` stands: records each batch sent."""

    def __init__(self, max_batch_bytes: int, fail_with: Exception | None = None) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.fail_with = fail_with
        self.batches: list[list[Any]] = []
        self.closed = False

    async def create_message_batch(self) -> RecordingBatch:
        return RecordingBatch(self.max_batch_bytes)

    async def send_messages(self, batch: RecordingBatch) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(batch.messages))

    async def close(self) -> None:
        self.closed = True

    @property
    def messages(self) -> list[Any]:
        return [m for batch in self.batches for m in batch]


class FakeClient:
    """Stands where `ServiceBusClient` stands."""

    def __init__(self, sender: FakeSender) -> None:
        self.sender = sender
        self.topics: list[str] = []
        self.closed = False

    def get_topic_sender(self, topic_name: str) -> FakeSender:
        self.topics.append(topic_name)
        return self.sender

    async def close(self) -> None:
        self.closed = True


def make(max_batch_bytes: int = 256 * 1024, **kwargs: Any) -> tuple[ServiceBusTransport, Any]:
    sender = FakeSender(max_batch_bytes, **kwargs)
    client = FakeClient(sender)
    factory_calls: list[int] = []

    def factory() -> FakeClient:
        factory_calls.append(1)
        return client

    transport = ServiceBusTransport(topic="cadre-topic", client_factory=factory)
    return transport, (client, sender, factory_calls)


async def test_message_carries_the_envelope_identity_and_routing() -> None:
    transport, (client, sender, _) = make()
    sent = envelope(1, recipient="counter/user/42", traceparent=TRACEPARENT)
    await transport.send([sent])
    (message,) = sender.messages
    assert client.topics == ["cadre-topic"]
    assert message.message_id == "env-1"
    assert message.session_id == "user/42"  # everything after the first '/'
    assert message.content_type == "application/json"
    assert message.subject == "test.Add"
    assert message.correlation_id == "task-1"
    assert message.application_properties == {
        "cadre_agent_type": "counter",
        "cadre_message": "test.Add",
        "cadre_version": 2,
        "cadre_task_id": "task-1",
        "cadre_attempt": 1,
        "traceparent": TRACEPARENT,
        "Diagnostic-Id": TRACEPARENT,
    }
    assert message.scheduled_enqueue_time_utc is None
    assert Envelope.from_bytes(b"".join(message.body)) == sent


async def test_no_traceparent_means_no_trace_properties() -> None:
    transport, (_, sender, _) = make()
    await transport.send([envelope(1)])
    props = sender.messages[0].application_properties
    assert "traceparent" not in props and "Diagnostic-Id" not in props


async def test_future_not_before_becomes_a_scheduled_message_and_past_does_not() -> None:
    transport, (_, sender, _) = make()
    due = utcnow() + timedelta(minutes=5)
    await transport.send(
        [envelope(1, not_before=due), envelope(2, not_before=utcnow() - timedelta(seconds=1))]
    )
    scheduled, immediate = sender.messages
    assert scheduled.scheduled_enqueue_time_utc == due
    assert immediate.scheduled_enqueue_time_utc is None
    body = json.loads(b"".join(scheduled.body))
    assert datetime.fromisoformat(body["not_before"].replace("Z", "+00:00")) == due


async def test_full_batch_is_sent_and_the_rest_goes_in_the_next() -> None:
    transport, (_, sender, _) = make(max_batch_bytes=2000)
    envelopes = [envelope(i, pad="x" * 500) for i in range(7)]
    await transport.send(envelopes)
    assert len(sender.batches) > 1
    assert all(0 < len(batch) < 7 for batch in sender.batches)
    assert [m.message_id for m in sender.messages] == [e.id for e in envelopes]


async def test_one_batch_per_session_in_send_order() -> None:
    transport, (_, sender, _) = make()
    envelopes = [envelope(1, "counter/a"), envelope(2, "counter/b"), envelope(3, "counter/a")]
    await transport.send(envelopes)
    assert [[m.message_id for m in b] for b in sender.batches] == [
        ["env-1", "env-3"],
        ["env-2"],
    ]
    assert [{m.session_id for m in b} for b in sender.batches] == [{"a"}, {"b"}]


async def test_a_message_larger_than_any_batch_is_a_transport_error() -> None:
    transport, (_, sender, _) = make(max_batch_bytes=600)
    with pytest.raises(TransportError, match="env-1 is larger"):
        await transport.send([envelope(1, pad="x" * 2000)])
    assert sender.batches == []


async def test_client_and_sender_are_created_once_and_closed() -> None:
    transport, (client, sender, factory_calls) = make()
    for i in range(3):
        await transport.send([envelope(i)])
    assert factory_calls == [1]
    assert client.topics == ["cadre-topic"]
    await transport.close()
    assert client.closed and sender.closed


async def test_sdk_errors_become_transport_errors() -> None:
    from azure.servicebus.exceptions import ServiceBusConnectionError

    transport, _ = make(fail_with=ServiceBusConnectionError(message="link detached"))
    with pytest.raises(TransportError, match="link detached"):
        await transport.send([envelope(1)])


async def test_a_hanging_sdk_is_cut_off_by_the_send_timeout() -> None:
    transport, (_, sender, _) = make()
    transport.send_timeout = 0.2

    async def hang(batch: Any) -> None:
        await asyncio.sleep(3600)

    sender.send_messages = hang  # type: ignore[method-assign]
    with pytest.raises(TransportError, match="took over"):
        await transport.send([envelope(1)])


async def test_topic_envelopes_must_be_resolved_first() -> None:
    transport, (_, sender, _) = make()
    topic_only = envelope(1).model_copy(update={"recipient": None, "topic": "news/t1"})
    with pytest.raises(EnvelopeInvalid):
        await transport.send([topic_only])
    assert sender.batches == []


def test_long_keys_get_a_stable_hashed_session() -> None:
    assert session_id("a" * 128) == "a" * 128
    long = session_id("k" * 500)
    assert long == session_id("k" * 500) and long.startswith("~") and len(long) <= 128
    assert long != session_id("k" * 501)


def test_settings_pick_connection_string_or_namespace() -> None:
    with pytest.raises(ConfigurationError, match="ServiceBusConnection"):
        ServiceBusTransport.from_settings(Settings.from_env({}))
    env = {
        "ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net",
        "CADRE_SERVICEBUS_TOPIC": "agents",
    }
    settings = Settings.from_env(env)
    transport = shared_transport(settings)
    assert transport is shared_transport(settings)
    assert (transport.topic, transport._namespace) == ("agents", "ns.servicebus.windows.net")


async def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "azure.servicebus", None)  # as if not installed
    transport = ServiceBusTransport(connection_string="Endpoint=sb://ns/;SharedAccessKey=x")
    with pytest.raises(ConfigurationError, match=r"\.\[azure\]"):
        await transport.send([envelope(1)])
