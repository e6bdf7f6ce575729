"""Glue between an Azure Functions Service Bus trigger and the `Processor`.

`function_app.py` stays thin:

    @app.service_bus_topic_trigger(arg_name="msg", topic_name="cadre", subscription_name=...,
                                   connection="ServiceBusConnection", is_sessions_enabled=True)
    async def planner(msg: func.ServiceBusMessage) -> None:
        await handle_delivery(processor, received(msg))

How a delivery is settled (Functions completes a message when the function returns and
abandons it when the function raises):

- handled, duplicate, dead-lettered: return, so the message is completed. A `DeliveryError`
  (bad bytes, unknown contract, ...) or a handler out of attempts is recorded in the store's
  dead letters by the `Processor` first; it is never looped through ``maxDeliveryCount``;
- retry: wait the retry policy's delay (at most `max_wait` seconds, within the session lock)
  and raise `RetryLater`, so Service Bus redelivers the message within its session: later
  messages for the same agent stay behind it. Set the subscription's ``maxDeliveryCount``
  above ``CADRE_MAX_ATTEMPTS`` so Cadre's own dead letters come first;
- a store that cannot even record a dead letter lets its error through: the message is
  abandoned and comes back.

This module does not import ``azure.functions``: `received` reads any object with
``get_body()`` and ``delivery_count``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import RetryLater
from ..processing import Disposition, Processed, Processor

DEFAULT_MAX_WAIT = 30.0
"""Longest in-function wait before a retry: well inside Service Bus' default 60 s lock."""


@dataclass(frozen=True, slots=True)
class Received:
    """What the processor needs from a Service Bus message: its bytes and its attempt."""

    body: bytes
    attempt: int


def received(message: Any) -> Received:
    """Read an ``azure.functions.ServiceBusMessage`` (or anything with ``get_body()`` and
    ``delivery_count``); Service Bus counts the first delivery as 1."""
    body = message.get_body()
    if isinstance(body, str):
        body = body.encode()
    count = getattr(message, "delivery_count", None)
    return Received(bytes(body), count if isinstance(count, int) and count >= 1 else 1)


async def handle_delivery(
    processor: Processor,
    delivery: Received,
    *,
    max_wait: float = DEFAULT_MAX_WAIT,
) -> Processed:
    """Process one delivery; return to complete it, raise `RetryLater` to have it again."""
    attempt = delivery.attempt
    processed = await processor.process(delivery.body, attempt=attempt)
    if processed.disposition is not Disposition.RETRY:
        return processed
    delay = min(processed.retry_after or 0.0, max_wait)
    if delay > 0:
        await asyncio.sleep(delay)
    envelope_id = processed.envelope.id if processed.envelope else "?"
    raise RetryLater(
        f"envelope {envelope_id} (attempt {attempt}) will be redelivered: {processed.error}",
        retry_after=processed.retry_after,
    )
