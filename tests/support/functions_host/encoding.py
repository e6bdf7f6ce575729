"""How the Functions host puts trigger data on the wire (``TypedData``), for HTTP and for the
Service Bus extension: the encodings the real worker must decode.

The host turns each binding value into ``TypedData`` by its .NET type: ``byte[]`` -> bytes,
``string`` -> string, ``double`` -> double, and anything else (``int``, ``long``,
``DateTime``, dictionaries) -> **JSON** (Newtonsoft, dates as ISO 8601 with seven fractional
digits). It never sends ``int`` TypedData for binding data (the worker cannot decode one:
"unsupported TypeData kind: int"). Null values are left out.

HTTP (the worker declares ``RawHttpBodyBytes`` and ``RpcHttpBodyOnly``): header names
lower-cased, query values that are not empty, route parameters as ``params``, the body as
bytes when there is one; no HTTP trigger metadata (``RpcHttpTriggerMetadataRemoved``).

Service Bus (``ServiceBusReceivedMessage``, a trigger without ``dataType``): the body as a
string; metadata ``DeliveryCount``, ``LockToken``, ``ExpiresAtUtc``, ``EnqueuedTimeUtc``,
``MessageId``, ``ContentType``, ``ReplyTo``, ``SequenceNumber``, ``To``, ``Subject``,
``Label``, ``CorrelationId``, ``ApplicationProperties``, ``UserProperties`` (the same
dictionary), ``SessionId``, ``ReplyToSessionId``, ``PartitionKey``,
``TransactionPartitionKey``, ``DeadLetterSource`` when set; never ``TimeToLive``,
``ScheduledEnqueueTimeUtc``, ``State`` or ``LockedUntil``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

NEVER_SENT = ("TimeToLive", "ScheduledEnqueueTimeUtc", "State", "LockedUntil")
"""Service Bus message properties the extension does not put in the trigger metadata."""


def dotnet_datetime(value: datetime) -> str:
    """A UTC ``DateTime`` as Newtonsoft writes it: seven fractional digits and ``Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0Z"


def typed(pb: Any, value: Any) -> Any:
    """`value` as the host's ``TypedData`` (see the module docstring); None for null."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return pb.TypedData(bytes=value)
    if isinstance(value, str):
        return pb.TypedData(string=value)
    if isinstance(value, float):
        return pb.TypedData(double=value)
    if isinstance(value, datetime):
        return pb.TypedData(json=json.dumps(dotnet_datetime(value)))
    return pb.TypedData(json=json.dumps(value, separators=(",", ":"), default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return dotnet_datetime(value)
    raise TypeError(f"not JSON: {value!r}")


def metadata(pb: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Trigger metadata: every value that is not null, as the host's ``TypedData``."""
    return {key: typed(pb, value) for key, value in values.items() if value is not None}


def sys_metadata(function_name: str) -> dict[str, Any]:
    """The ``sys`` entry the host adds to every invocation's binding data."""
    return {
        "MethodName": function_name,
        "UtcNow": dotnet_datetime(datetime.now(UTC)),
        "RandGuid": str(uuid.uuid4()),
    }


def http_request(
    pb: Any,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    route_params: Mapping[str, str] | None = None,
) -> Any:
    """An HTTP trigger's input ``TypedData`` as the host builds it."""
    query = {k: v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if v}
    http = pb.RpcHttp(
        method=method,
        url=url,
        headers={k.lower(): v for k, v in (headers or {}).items()},
        params=dict(route_params or {}),
        query=query,
    )
    if body:
        http.body.CopyFrom(pb.TypedData(bytes=body))
    return pb.TypedData(http=http)


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as a session receiver of the Service Bus extension holds it."""

    body: bytes
    message_id: str
    session_id: str | None
    application_properties: dict[str, Any]
    content_type: str | None = None
    correlation_id: str | None = None
    subject: str | None = None
    delivery_count: int = 1
    sequence_number: int = 1
    enqueued_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    time_to_live: timedelta = timedelta(days=14)
    lock_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    dead_letter_source: str | None = None


def service_bus_trigger(
    pb: Any, message: ReceivedMessage, function_name: str
) -> tuple[Any, dict[str, Any]]:
    """A Service Bus trigger's input ``TypedData`` and trigger metadata, as the extension and
    the host send them for one message (``cardinality: one``)."""
    properties = dict(message.application_properties)
    values: dict[str, Any] = {
        "DeliveryCount": message.delivery_count,
        "DeadLetterSource": message.dead_letter_source,
        "LockToken": message.lock_token,
        "ExpiresAtUtc": message.enqueued_time + message.time_to_live,
        "EnqueuedTimeUtc": message.enqueued_time,
        "MessageId": message.message_id,
        "ContentType": message.content_type,
        "ReplyTo": None,
        "SequenceNumber": message.sequence_number,
        "To": None,
        "Subject": message.subject,
        "Label": message.subject,
        "CorrelationId": message.correlation_id,
        "ApplicationProperties": properties,
        "UserProperties": properties,
        "SessionId": message.session_id,
        "ReplyToSessionId": None,
        "PartitionKey": message.session_id,
        "TransactionPartitionKey": message.session_id,
        "sys": sys_metadata(function_name),
    }
    body = message.body.decode("utf-8", errors="replace")
    return pb.TypedData(string=body), metadata(pb, values)
