"""The Azure Functions host: the runtime behind ``function_app.py``.

`function_app.py` stays thin: every Service Bus trigger calls ``deliver`` and the HTTP
trigger calls ``handle_http``; both build the host on first use (cold start pays only for
``azure.functions``; see `cadre.hosts.functions_index`):

    @app.service_bus_topic_trigger(arg_name="msg", topic_name="cadre", subscription_name=...,
                                   connection="ServiceBusConnection", is_sessions_enabled=True)
    async def agent_notebook(msg: func.ServiceBusMessage, context: func.Context) -> None:
        await deliver(msg, context)

`FunctionsRuntime` is the Functions host's `cadre.runtime.Runtime` (what the HTTP API
needs, through the shared client side `cadre.hosts._client.Client`) on the Cosmos DB store
and the Service Bus transport, and the `Processor` the triggers run.

How a delivery is settled (Functions completes a message when the function returns and
abandons it when the function raises):

- handled, duplicate, dead-lettered: return, so the message is completed. A `DeliveryError`
  (bad bytes, unknown contract, ...) or a handler out of attempts is recorded in the store's
  dead letters by the `Processor` first (which tells the sender: a team whose turn request
  is dead-lettered fails with the reason); it is never looped through ``maxDeliveryCount``;
- retry: wait the retry policy's delay (at most `max_wait` seconds, within the session lock)
  and raise `RetryLater`, so Service Bus redelivers the message within its session: later
  messages for the same agent stay behind it. Set the subscription's ``maxDeliveryCount``
  above ``CADRE_MAX_ATTEMPTS`` so Cadre's own dead letters come first;
- a store that cannot even record a dead letter lets its error through: the message is
  abandoned and comes back.

`received` reads any object with ``get_body()`` and ``delivery_count``; this module imports
``azure.functions`` only to answer HTTP requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RetryLater
from ..processing import Disposition, Processed, Processor
from ..registry import Registry, default_registry
from ..retry import RetryPolicy
from ..settings import DEFAULT_SEEN_LIMIT, FunctionsSettings, Settings
from ..step import Step
from ..stores.base import StateStore
from ..transports.base import Transport
from ._client import Client
from .functions_telemetry import functions_context

DEFAULT_MAX_WAIT = FunctionsSettings.retry_wait_seconds
"""Longest in-function wait before a retry: well inside Service Bus' default 60 s lock
(``CADRE_FUNCTIONS_RETRY_WAIT_SECONDS``)."""


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


class FunctionsRuntime(Client):
    """Agents on Azure Functions: Cosmos DB state, Service Bus messages.

    What the HTTP API needs (`cadre.runtime.Runtime`) and what the Service Bus triggers
    run (``deliver``). One per worker process, built on first
    use by `runtime()`; the store and transport are created lazily too and reused by every
    invocation.
    """

    def __init__(
        self,
        store: StateStore,
        transport: Transport,
        *,
        registry: Registry | None = None,
        policy: RetryPolicy | None = None,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        max_wait: float = DEFAULT_MAX_WAIT,
        topic: str = "cadre",
    ) -> None:
        self.store = store
        self.transport = transport
        self.registry = registry or default_registry
        self.step = Step(store, transport, registry=self.registry, seen_limit=seen_limit)
        self.processor = Processor(self.step, policy=policy)
        self.max_wait = max_wait
        self.topic = topic

    @classmethod
    def from_settings(cls, settings: Settings) -> FunctionsRuntime:
        """The app's agents (``CADRE_APP``), `shared_store` and `shared_transport` (the
        `settings.azure` group), the retry policy and `settings.functions`' wait."""
        from ..apps import load_app
        from ..stores.cosmos import shared_store
        from ..transports.servicebus import shared_transport

        load_app(settings.app_modules)
        return cls(
            shared_store(settings.azure),
            shared_transport(settings.azure),
            policy=settings.retry.policy(),
            seen_limit=settings.seen_limit,
            max_wait=settings.functions.retry_wait_seconds,
            topic=settings.azure.servicebus_topic,
        )

    async def deliver(self, message: Any) -> Processed:
        """Run one Service Bus message through the step; return to complete it, raise
        `RetryLater` to have it redelivered (see the module docstring)."""
        return await handle_delivery(self.processor, received(message), max_wait=self.max_wait)

    def transport_check(self) -> dict[str, Any]:
        """The transport is configured (it is not probed: a probe would be a message)."""
        return {"ok": True, "detail": f"{type(self.transport).__name__} to {self.topic!r}"}


_runtime: FunctionsRuntime | None = None
_http: Any = None


def runtime() -> FunctionsRuntime:
    """This process's runtime, built from the environment on first use."""
    global _runtime
    if _runtime is None:
        from ..observability import configure

        configure(role="functions")  # exporters first: the first message is traced too
        _runtime = FunctionsRuntime.from_settings(Settings.from_env())
    return _runtime


def use_runtime(rt: FunctionsRuntime | None) -> None:
    """Install `rt` as this process's runtime (tests, custom wiring); None: rebuild from
    the environment on next use. The HTTP app is rebuilt over it."""
    global _runtime, _http
    _runtime, _http = rt, None


async def deliver(message: Any, context: Any = None) -> Processed:
    """What every Service Bus trigger runs (inside the host's trace, when it has one)."""
    with functions_context(context):
        return await runtime().deliver(message)


STREAM_SECONDS = 5.0
"""How long one live-stream response lasts under Functions. The Python worker's ASGI bridge
(`func.AsgiMiddleware`) returns a response only once the app has finished it, so an open
stream would never arrive: each response ends after this long with the messages so far,
and the browser's EventSource reconnects and resumes from the last event (long polling)."""


def http_app() -> Any:
    """The HTTP API (`cadre.api.create_app`) over `runtime()`, wrapped for Functions."""
    global _http
    if _http is None:
        import azure.functions as func

        from ..api import create_app

        api = Settings.from_env().api
        app = create_app(
            runtime(),
            api_key=api.key,
            max_task_chars=api.max_task_chars,
            stream_max_seconds=STREAM_SECONDS,
        )
        _http = func.AsgiMiddleware(app)  # type: ignore[no-untyped-call]
    return _http


async def handle_http(request: Any, context: Any = None) -> Any:
    """What the HTTP trigger runs: the request through the ASGI app, inside the host's
    trace (a task submitted here is a child of the request's span)."""
    with functions_context(context):
        return await http_app().handle_async(request, context)


__all__: Sequence[str] = (
    "DEFAULT_MAX_WAIT",
    "FunctionsRuntime",
    "Received",
    "deliver",
    "handle_delivery",
    "handle_http",
    "http_app",
    "received",
    "runtime",
    "use_runtime",
)
