"""Runs inside the worker process (Python 3.13), before it connects: Cadre's Functions
runtime on the local Cosmos DB server and a Service Bus client that hands what Cadre sends to
the host stand-in (the test process plays the broker).

Everything else is production: `function_app.py` as deployed, its functions calling
`cadre.hosts.functions.deliver` / ``handle_http``, the app's agents (``CADRE_APP``), the retry
policy and waits from the environment (`Settings.from_env`). Only the two adapters differ
from `FunctionsRuntime.from_settings`: the store is the tests' Cosmos store for the local
server (its 500-for-404 quirk handled), and the transport is the real `ServiceBusTransport`
(real SDK messages and batches) with a client whose sender forwards each batch over gRPC.
"""

from __future__ import annotations

import json
import os
from typing import Any


class _Batch:
    """A real SDK batch (it decides when it is full) that remembers its messages."""

    def __init__(self) -> None:
        from azure.servicebus import ServiceBusMessageBatch

        self.real = ServiceBusMessageBatch(max_size_in_bytes=256 * 1024)
        self.messages: list[Any] = []

    def add_message(self, message: Any) -> None:
        self.real.add_message(message)
        self.messages.append(message)

    def __len__(self) -> int:
        return len(self.real)


class _LoopbackSender:
    def __init__(self, client: LoopbackClient, topic: str) -> None:
        self.client, self.topic = client, topic

    async def create_message_batch(self) -> _Batch:
        return _Batch()

    async def send_messages(self, batch: _Batch) -> None:
        import ServiceBusLoopback_pb2 as pb
        from azure.servicebus.exceptions import ServiceBusConnectionError

        sent = pb.SentBatch(topic=self.topic)
        for message in batch.messages:
            due = message.scheduled_enqueue_time_utc
            sent.messages.add(
                body=b"".join(message.body),
                message_id=message.message_id or "",
                session_id=message.session_id or "",
                content_type=message.content_type or "",
                subject=message.subject or "",
                correlation_id=message.correlation_id or "",
                application_properties=json.dumps(
                    {str(k): v for k, v in (message.application_properties or {}).items()}
                ),
                scheduled_enqueue_time_utc=due.isoformat() if due else "",
            )
        result = await self.client.stub().SendBatch(sent, timeout=30)
        if result.error:
            raise ServiceBusConnectionError(message=result.error)

    async def close(self) -> None:
        pass


class LoopbackClient:
    """Stands for ``azure.servicebus.aio.ServiceBusClient`` (what `ServiceBusTransport`
    uses of it): topic senders whose batches go to the host stand-in."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: Any = None
        self._stub: Any = None

    def stub(self) -> Any:
        if self._stub is None:
            import grpc
            from ServiceBusLoopback_pb2_grpc import ServiceBusLoopbackStub

            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = ServiceBusLoopbackStub(self._channel)
        return self._stub

    def get_topic_sender(self, topic_name: str) -> _LoopbackSender:
        return _LoopbackSender(self, topic_name)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None


def install() -> None:
    """Install this process's Cadre runtime (see the module docstring)."""
    from cadre.apps import load_app
    from cadre.hosts.functions import FunctionsRuntime, use_runtime
    from cadre.settings import Settings
    from cadre.transports.servicebus import ServiceBusTransport
    from tests.support.cosmos_server import EMULATOR_KEY, _local_server_store_class

    settings = Settings.from_env()
    load_app(settings.app_modules)
    store = _local_server_store_class()(
        os.environ["CADRE_TEST_COSMOS_ENDPOINT"],
        key=EMULATOR_KEY,
        database=settings.azure.cosmos_database,
        container=settings.azure.cosmos_container,
        client_options={"enable_endpoint_discovery": False},
    )
    address = os.environ["CADRE_STANDIN_LOOPBACK"]
    transport = ServiceBusTransport(
        topic=settings.azure.servicebus_topic,
        client_factory=lambda: LoopbackClient(address),
        send_timeout=30,
    )
    use_runtime(
        FunctionsRuntime(
            store,
            transport,
            policy=settings.retry.policy(),
            seen_limit=settings.seen_limit,
            max_wait=settings.functions.retry_wait_seconds,
            topic=settings.azure.servicebus_topic,
        )
    )
