"""An Azure Service Bus transport (send side): every envelope goes to one topic.

    transport = ServiceBusTransport(topic="cadre", namespace="ns.servicebus.windows.net")
    transport = ServiceBusTransport(topic="cadre", connection_string="Endpoint=sb://...")

Each agent type has one session-enabled subscription on the topic, filtered on the
``cadre_agent_type`` application property; Azure Functions receives from it (see
`cadre.hosts.functions`). One message per envelope (layout in docs/azure.md):

- ``message_id`` = the envelope id: with duplicate detection on the topic, a re-published
  outbox is dropped by the broker (the step drops what slips through);
- ``session_id`` = the recipient's key: one agent instance is served by one receiver at a
  time, in order (keys over 128 characters become ``~`` + a hash);
- ``application_properties``: ``cadre_agent_type``, ``cadre_message``, ``cadre_version``,
  ``cadre_task_id``, ``cadre_attempt``, ``traceparent`` and ``Diagnostic-Id``;
- ``content_type`` application/json, ``subject`` the message name, ``correlation_id`` the task
  id, the body the envelope's JSON bytes (`Envelope.to_bytes`);
- an envelope whose ``not_before`` is in the future is a scheduled message.

Messages go out in batches, one batch per session (a partitioned entity accepts a batch only
when every message has the same session), split when a batch is full. The SDK client and
sender are created on first use and reused (one per process in Functions: `shared_transport`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..envelope import Envelope, utcnow
from ..errors import ConfigurationError, EnvelopeInvalid, TransportError

MAX_SESSION_ID = 128
AGENT_TYPE_PROPERTY = "cadre_agent_type"
"""The application property each agent type's subscription filters on (infra/ creates the
filters from it)."""
MAX_SUBSCRIPTION_NAME = 50
_SUBSCRIPTION_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")


def _sdk() -> Any:
    try:
        import azure.servicebus as servicebus
        import azure.servicebus.exceptions  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the Service Bus transport needs azure-servicebus: pip install -e '.[azure]'"
        ) from None
    return servicebus


def session_id(key: str) -> str:
    """The session of an agent key: the key itself, or ``~`` + a hash when over 128 chars."""
    if len(key) <= MAX_SESSION_ID:
        return key
    return "~" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def subscription_name(agent_type: str) -> str:
    """The topic subscription of an agent type: the type itself when Service Bus accepts it
    (1-50 letters, digits, ``.``, ``-``, ``_``, starting and ending with a letter or digit),
    else its valid part cut to 41 characters + ``-`` + 8 hex digits of a hash of the type.

    The one naming rule: the Functions triggers and ``cadre infra agent-types`` (which
    generates the Bicep parameter) both call it.
    """
    if _SUBSCRIPTION_NAME_RE.match(agent_type):
        return agent_type
    digest = hashlib.blake2b(agent_type.encode(), digest_size=4).hexdigest()
    core = re.sub(r"[^A-Za-z0-9._-]", "", agent_type)
    core = core.strip("._-")[: MAX_SUBSCRIPTION_NAME - len(digest) - 1].rstrip("._-")
    return f"{core}-{digest}" if core else digest


def application_properties(envelope: Envelope, agent_type: str) -> dict[str, str | int]:
    """The properties subscriptions filter on and tools read without parsing the body."""
    props: dict[str, str | int] = {
        AGENT_TYPE_PROPERTY: agent_type,
        "cadre_message": envelope.message,
        "cadre_version": envelope.version,
        "cadre_task_id": envelope.task_id,
        "cadre_attempt": envelope.attempt,
    }
    if envelope.traceparent:
        props["traceparent"] = envelope.traceparent
        props["Diagnostic-Id"] = envelope.traceparent  # what Azure SDKs and App Insights read
    return props


def to_message(envelope: Envelope) -> Any:
    """The `ServiceBusMessage` for one envelope (see the module docstring)."""
    servicebus = _sdk()
    recipient = envelope.recipient_id
    if recipient is None:
        raise EnvelopeInvalid(f"envelope {envelope.id} has no recipient (resolve topics first)")
    message = servicebus.ServiceBusMessage(
        envelope.to_bytes(),
        message_id=envelope.id,
        session_id=session_id(recipient.key),
        application_properties=application_properties(envelope, recipient.type),
        content_type="application/json",
        subject=envelope.message,
        correlation_id=envelope.task_id,
    )
    if envelope.not_before is not None and envelope.not_before > utcnow():
        message.scheduled_enqueue_time_utc = envelope.not_before
    return message


class ServiceBusTransport:
    """Sends envelopes to one Service Bus topic (see the module docstring)."""

    def __init__(
        self,
        *,
        topic: str = "cadre",
        connection_string: str | None = None,
        namespace: str | None = None,
        client_factory: Callable[[], Any] | None = None,
        send_timeout: float = 60.0,
    ) -> None:
        if client_factory is None and not (connection_string or namespace):
            raise ConfigurationError(
                "the Service Bus transport needs ServiceBusConnection (a connection string) or "
                "ServiceBusConnection__fullyQualifiedNamespace (with an Azure identity)"
            )
        self.topic, self.send_timeout = topic, send_timeout
        self._connection_string, self._namespace = connection_string, namespace
        self._factory = client_factory or self._default_client
        self._client: Any = None
        self._sender: Any = None
        self._credential: Any = None

    @classmethod
    def from_settings(cls, settings: Any) -> ServiceBusTransport:
        """A transport configured by `cadre.settings.Settings`."""
        return cls(
            topic=settings.servicebus_topic,
            connection_string=settings.servicebus_connection,
            namespace=settings.servicebus_namespace,
        )

    def _default_client(self) -> Any:
        _sdk()
        from azure.servicebus.aio import ServiceBusClient

        if self._connection_string:
            return ServiceBusClient.from_connection_string(self._connection_string)
        try:
            from azure.identity.aio import DefaultAzureCredential
        except ImportError:
            raise ConfigurationError(
                "Service Bus with an identity needs azure-identity: pip install -e '.[azure]'"
            ) from None
        self._credential = DefaultAzureCredential()
        return ServiceBusClient(self._namespace or "", self._credential)

    def _open_sender(self) -> Any:
        if self._sender is None:
            if self._client is None:
                self._client = self._factory()
            self._sender = self._client.get_topic_sender(topic_name=self.topic)
        return self._sender

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Send in batches, one batch per session; TransportError when the broker fails."""
        if not envelopes:
            return
        by_session: dict[str, list[Any]] = {}
        for envelope in envelopes:
            message = to_message(envelope)
            by_session.setdefault(message.session_id, []).append(message)
        try:
            async with asyncio.timeout(self.send_timeout):
                sender = self._open_sender()
                for messages in by_session.values():
                    await self._send_batched(sender, messages)
        except TimeoutError as exc:
            raise TransportError(
                f"Service Bus send to topic {self.topic!r} took over {self.send_timeout}s"
            ) from exc
        except (ConfigurationError, TransportError):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith(("azure.", "uamqp", "aiohttp")) or isinstance(
                exc, OSError
            ):
                raise TransportError(f"Service Bus send to {self.topic!r} failed: {exc}") from exc
            raise

    async def _send_batched(self, sender: Any, messages: list[Any]) -> None:
        servicebus = _sdk()
        too_big = servicebus.exceptions.MessageSizeExceededError
        batch = await sender.create_message_batch()
        for message in messages:
            try:
                batch.add_message(message)
                continue
            except too_big:
                if len(batch) == 0:
                    raise TransportError(
                        f"envelope {message.message_id} is larger than a Service Bus message "
                        "may be; keep large content out of payloads"
                    ) from None
            await sender.send_messages(batch)
            batch = await sender.create_message_batch()
            try:
                batch.add_message(message)
            except too_big:
                raise TransportError(
                    f"envelope {message.message_id} is larger than a Service Bus message may be"
                ) from None
        if len(batch):
            await sender.send_messages(batch)

    async def close(self) -> None:
        """Close the sender, the client and a credential this transport created."""
        sender, client, credential = self._sender, self._client, self._credential
        self._sender = self._client = self._credential = None
        for resource in (sender, client, credential):
            if resource is not None:
                await resource.close()


_shared: dict[tuple[Any, ...], ServiceBusTransport] = {}


def shared_transport(settings: Any) -> ServiceBusTransport:
    """One transport (one client and sender) per process and settings, reused by every
    invocation."""
    key = (settings.servicebus_connection, settings.servicebus_namespace, settings.servicebus_topic)
    transport = _shared.get(key)
    if transport is None:
        transport = _shared[key] = ServiceBusTransport.from_settings(settings)
    return transport
