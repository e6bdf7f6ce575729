"""A stand-in for Service Bus at the SDK boundary, and a loopback that plays the broker.

`FakeServiceBus.client` is the `client_factory` of a real `ServiceBusTransport`: the
transport builds real `azure.servicebus.ServiceBusMessage`s and real batches, and this records
them. `Loopback` then does what Service Bus and the Functions host do with them: routes each
message to the function whose subscription filter matches (``cadre_agent_type``), as a real
``azure.functions`` Service Bus message; drops a message id it has seen (duplicate
detection); keeps scheduled messages until they are released; completes a message when the
function returns and redelivers it with ``delivery_count + 1`` ahead of the rest of its
session when the function raises, up to ``max_delivery_count`` (then Service Bus' own
dead-letter queue); and invokes each function inside a host span of the message's trace
(the ``context.trace_context`` the worker passes), as the host does with ``Diagnostic-Id``.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.functions.servicebus import ServiceBusMessage as FunctionsMessage
from azure.servicebus import ServiceBusMessage, ServiceBusMessageBatch

from cadre.transports.servicebus import AGENT_TYPE_PROPERTY

Trigger = Callable[[FunctionsMessage, Any], Awaitable[None]]


@dataclass
class TraceContext:
    """The shape of the worker's ``TraceContext``."""

    trace_parent: str | None = None
    trace_state: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class InvocationContext:
    """The shape of the ``azure.functions.Context`` the worker passes as ``context``."""

    function_name: str
    invocation_id: str = "00000000-0000-0000-0000-000000000000"
    function_directory: str = "."
    trace_context: TraceContext = field(default_factory=TraceContext)
    retry_context: Any = None


class _Batch:
    """A real SDK batch (it decides when it is full) that remembers what was added."""

    def __init__(self) -> None:
        self.real = ServiceBusMessageBatch(max_size_in_bytes=256 * 1024)
        self.messages: list[ServiceBusMessage] = []

    def add_message(self, message: ServiceBusMessage) -> None:
        self.real.add_message(message)
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.real)


class _Sender:
    def __init__(self, bus: FakeServiceBus, topic: str) -> None:
        self.bus, self.topic = bus, topic

    async def create_message_batch(self) -> _Batch:
        return _Batch()

    async def send_messages(self, batch: _Batch) -> None:
        if self.bus.fail_sends:
            self.bus.fail_sends -= 1
            from azure.servicebus.exceptions import ServiceBusConnectionError

            raise ServiceBusConnectionError(message="connection lost (injected)")
        self.bus.batches.append((self.topic, list(batch.messages)))
        for message in batch.messages:
            self.bus.sent.append(message)
            for listener in self.bus.listeners:
                listener(message)

    async def close(self) -> None:
        pass


class _Client:
    def __init__(self, bus: FakeServiceBus) -> None:
        self.bus = bus

    def get_topic_sender(self, topic_name: str) -> _Sender:
        return _Sender(self.bus, topic_name)

    async def close(self) -> None:
        pass


@dataclass
class FakeServiceBus:
    """Records every message and batch sent; `fail_sends` makes the next sends fail."""

    sent: list[ServiceBusMessage] = field(default_factory=list)
    batches: list[tuple[str, list[ServiceBusMessage]]] = field(default_factory=list)
    listeners: list[Callable[[ServiceBusMessage], None]] = field(default_factory=list)
    fail_sends: int = 0

    def client(self) -> _Client:
        """The `client_factory` of a `ServiceBusTransport`."""
        return _Client(self)


def body_of(message: ServiceBusMessage) -> bytes:
    """The bytes of an SDK message's body."""
    return b"".join(message.body)


def functions_message(message: ServiceBusMessage, delivery_count: int = 1) -> FunctionsMessage:
    """The ``azure.functions`` message the Python worker would hand a trigger for `message`."""
    return FunctionsMessage(
        body=body_of(message),
        message_id=message.message_id,
        session_id=message.session_id,
        application_properties=dict(message.application_properties or {}),
        user_properties={},
        delivery_count=delivery_count,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        enqueued_time_utc=datetime.now(UTC),
        scheduled_enqueue_time_utc=message.scheduled_enqueue_time_utc,
    )


class Loopback:
    """Feeds what the functions send back into the functions (see the module docstring)."""

    def __init__(
        self,
        bus: FakeServiceBus,
        triggers: Mapping[str, Trigger],
        *,
        max_delivery_count: int = 10,
    ) -> None:
        self.triggers = dict(triggers)  # agent type (the subscription filter) -> function
        self.max_delivery_count = max_delivery_count
        self.queue: collections.deque[tuple[ServiceBusMessage, int]] = collections.deque()
        self.scheduled: list[ServiceBusMessage] = []
        self.seen_ids: set[str] = set()
        self.duplicates: list[str] = []
        self.completed: list[tuple[str, str, int]] = []  # (agent type, message id, deliveries)
        self.delivered_messages: list[ServiceBusMessage] = []
        self.broker_dead_letters: list[ServiceBusMessage] = []
        bus.listeners.append(self._enqueue)

    def _enqueue(self, message: ServiceBusMessage) -> None:
        if message.message_id in self.seen_ids:
            self.duplicates.append(message.message_id)  # duplicate detection drops it
            return
        self.seen_ids.add(message.message_id)
        due = message.scheduled_enqueue_time_utc
        if due is not None and due > datetime.now(UTC):
            self.scheduled.append(message)
        else:
            self.queue.append((message, 1))

    @staticmethod
    def host_span(traceparent: Any) -> str | None:
        """A span of the host under `traceparent`: same trace, the host's own span id."""
        if not isinstance(traceparent, str) or traceparent.count("-") != 3:
            return None
        version, trace_id, _, flags = traceparent.split("-")
        return f"{version}-{trace_id}-{os.urandom(8).hex()}-{flags}"

    def release_scheduled(self) -> int:
        """Make every scheduled message due now (a clock jump); returns how many."""
        released = len(self.scheduled)
        self.queue.extend((m, 1) for m in self.scheduled)
        self.scheduled.clear()
        return released

    async def run(self, *, limit: int = 500) -> int:
        """Deliver until nothing is due; returns how many deliveries were made."""
        deliveries = 0
        while self.queue:
            deliveries += 1
            if deliveries > limit:
                raise AssertionError(f"still busy after {limit} deliveries")
            message, count = self.queue.popleft()
            agent_type = str(message.application_properties[AGENT_TYPE_PROPERTY])
            trigger = self.triggers[agent_type]
            context = InvocationContext(trigger.__name__, invocation_id=f"inv-{deliveries}")
            # The host continues the message's trace (it reads Diagnostic-Id) in its span.
            diagnostic_id = (message.application_properties or {}).get("Diagnostic-Id")
            context.trace_context.trace_parent = self.host_span(diagnostic_id)
            try:
                await trigger(functions_message(message, count), context)
            except Exception:  # the host abandons the message: it comes back first
                if count >= self.max_delivery_count:
                    self.broker_dead_letters.append(message)
                else:
                    self.queue.appendleft((message, count + 1))
                continue
            self.completed.append((agent_type, str(message.message_id), count))
            self.delivered_messages.append(message)
        return deliveries

    def sent_to(self, agent_type: str) -> list[Any]:
        """Every completed delivery's message id for `agent_type`."""
        return [m for t, m, _ in self.completed if t == agent_type]
