"""Service Bus as the Functions host's Service Bus extension sees it: a topic with one
session-enabled subscription per agent type, settled with ``autoCompleteMessages: true``.

- the invocation succeeds: the message is **completed**;
- it fails: the message is **abandoned** and comes back first in its session with
  ``DeliveryCount`` + 1; once ``DeliveryCount`` reaches the subscription's
  ``maxDeliveryCount``, a failed delivery moves it to the subscription's **dead-letter
  queue** (``MaxDeliveryCountExceeded``);
- one message at a time per session (subscription + ``SessionId``), in order; different
  sessions run concurrently, up to ``maxConcurrentSessions``;
- a message id seen before is dropped (duplicate detection); a scheduled message waits until
  `release_scheduled`.

Messages arrive through `accept` (what the worker's Cadre sends, via the host stand-in's
loopback, as real ``azure.servicebus.ServiceBusMessage`` objects) and leave as Service Bus
trigger invocations of the real worker (`FunctionsHost.invoke_service_bus`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .encoding import ReceivedMessage
from .host import FunctionsHost, Invocation

AGENT_TYPE_PROPERTY = "cadre_agent_type"
"""The property each subscription's correlation filter matches (`cadre.transports.servicebus`)."""


@dataclass(frozen=True)
class Delivery:
    """One delivery of a message to its subscription's function, and how it was settled."""

    subscription: str
    session_id: str | None
    message_id: str
    delivery_count: int
    invocation: Invocation
    settlement: str  # completed | abandoned | dead-lettered


@dataclass(frozen=True)
class DeadLettered:
    """A message in a subscription's dead-letter queue."""

    subscription: str
    message: ReceivedMessage
    reason: str
    description: str


def host_span(traceparent: Any) -> str:
    """A span of the host under `traceparent` (``Diagnostic-Id``): same trace, own span id."""
    if not isinstance(traceparent, str) or traceparent.count("-") != 3:
        return ""
    version, trace_id, _, flags = traceparent.split("-")
    return f"{version}-{trace_id}-{os.urandom(8).hex()}-{flags}"


class ServiceBusBroker:
    """Routes, delivers and settles (see the module docstring)."""

    def __init__(
        self,
        host: FunctionsHost,
        functions: Mapping[str, str],
        *,
        max_delivery_count: int = 10,
        max_concurrent_sessions: int = 8,
    ) -> None:
        self.host = host
        self.functions = dict(functions)  # subscription (agent type) -> function name
        self.max_delivery_count = max_delivery_count
        self.max_concurrent_sessions = max_concurrent_sessions
        self._lock = threading.Lock()  # accept() runs on the host's gRPC thread
        self._sessions: dict[tuple[str, str | None], collections.deque[ReceivedMessage]] = {}
        self._sequence = itertools.count(1)
        self.seen_ids: set[str] = set()
        self.duplicates: list[str] = []
        self.scheduled: list[tuple[str, ReceivedMessage]] = []
        self.unrouted: list[Any] = []
        self.deliveries: list[Delivery] = []
        self.dead_letters: list[DeadLettered] = []

    # -- the topic ----------------------------------------------------------------------

    def accept(self, message: Any) -> None:
        """Take one sent ``azure.servicebus.ServiceBusMessage`` into the topic."""
        with self._lock:
            if message.message_id in self.seen_ids:
                self.duplicates.append(message.message_id)
                return
            self.seen_ids.add(message.message_id)
            properties = dict(message.application_properties or {})
            subscription = str(properties.get(AGENT_TYPE_PROPERTY, ""))
            if subscription not in self.functions:
                self.unrouted.append(message)  # no subscription's filter matches
                return
            received = ReceivedMessage(
                body=b"".join(message.body),
                message_id=str(message.message_id),
                session_id=message.session_id,
                application_properties={str(k): v for k, v in properties.items()},
                content_type=message.content_type,
                correlation_id=message.correlation_id,
                subject=message.subject,
                sequence_number=next(self._sequence),
            )
            due = message.scheduled_enqueue_time_utc
            if due is not None and due > datetime.now(UTC):
                self.scheduled.append((subscription, received))
            else:
                self._enqueue(subscription, received)

    def _enqueue(self, subscription: str, message: ReceivedMessage, *, first: bool = False) -> None:
        queue = self._sessions.setdefault((subscription, message.session_id), collections.deque())
        if first:
            queue.appendleft(message)
        else:
            queue.append(message)

    def release_scheduled(self) -> int:
        """Make every scheduled message due now; returns how many."""
        with self._lock:
            released = len(self.scheduled)
            for subscription, message in self.scheduled:
                self._enqueue(subscription, message)
            self.scheduled.clear()
        return released

    def _next(
        self, busy: set[tuple[str, str | None]]
    ) -> tuple[tuple[str, str | None], ReceivedMessage] | None:
        with self._lock:
            for key, queue in self._sessions.items():
                if queue and key not in busy:
                    return key, queue.popleft()
        return None

    # -- the extension: receive, invoke, settle -----------------------------------------

    async def run(self, *, limit: int = 500) -> int:
        """Deliver until nothing is due; returns how many deliveries were made."""
        busy: dict[asyncio.Task[Invocation], tuple[tuple[str, str | None], ReceivedMessage]] = {}
        made = 0
        while True:
            while len(busy) < self.max_concurrent_sessions:
                found = self._next({key for key, _ in busy.values()})
                if found is None:
                    break
                made += 1
                if made > limit:
                    raise AssertionError(f"still busy after {limit} deliveries")
                key, message = found
                task = asyncio.ensure_future(self._invoke(key[0], message))
                busy[task] = (key, message)
            if not busy:
                return made
            done, _ = await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                (subscription, _), message = busy.pop(task)
                self._settle(subscription, message, task.result())

    async def _invoke(self, subscription: str, message: ReceivedMessage) -> Invocation:
        trace = host_span(message.application_properties.get("Diagnostic-Id"))
        return await self.host.invoke_service_bus(
            self.functions[subscription], message, trace_parent=trace
        )

    def _settle(self, subscription: str, message: ReceivedMessage, invocation: Invocation) -> None:
        if invocation.succeeded:
            settlement = "completed"
        elif message.delivery_count >= self.max_delivery_count:
            settlement = "dead-lettered"
            self.dead_letters.append(
                DeadLettered(
                    subscription,
                    message,
                    "MaxDeliveryCountExceeded",
                    f"delivered {message.delivery_count} times; last error: {invocation.error}",
                )
            )
        else:
            settlement = "abandoned"
            again = _with(message, delivery_count=message.delivery_count + 1)
            with self._lock:
                self._enqueue(subscription, again, first=True)
        self.deliveries.append(
            Delivery(
                subscription,
                message.session_id,
                message.message_id,
                message.delivery_count,
                invocation,
                settlement,
            )
        )

    def completed(self, subscription: str | None = None) -> list[Delivery]:
        """The completed deliveries (of one subscription)."""
        return [
            d
            for d in self.deliveries
            if d.settlement == "completed" and subscription in (None, d.subscription)
        ]


def _with(message: ReceivedMessage, **changes: Any) -> ReceivedMessage:
    from dataclasses import replace

    return replace(message, lock_token=os.urandom(16).hex(), **changes)
