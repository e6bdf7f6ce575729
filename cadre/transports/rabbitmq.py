"""The RabbitMQ transport (aio-pika): partitioned durable queues for self-hosted workers.

Topology, all durable, named after `name` (so apps and tests can share one broker):

    <name>              topic exchange for timers that are due: routing key ``d<ms>.p<i>``
    <name>.p<i>         partition queue i (i < partitions), bound with ``#.p<i>``,
                        x-single-active-consumer: one consumer at a time, others stand by
    <name>.delay        topic exchange for timers
    <name>.delay.<ms>   delay bucket: x-message-ttl=<ms>, dead-letters back to <name>
    <name>.dlq          poison messages, with the reason in headers

An agent id maps to one partition by a stable hash (CRC-32) of its key's first segment
(``manager/t1``, ``writer/t1`` and ``manager/t1/nested`` all hash ``t1``), so every
envelope for one agent goes through one queue, whose single active consumer runs the
agent's messages one at a time, in order, however many workers run; and the agents of
one conversation or task (which share its key) share a partition, so the worker that owns
it can hand their messages to each other without the broker (see `cadre.hosts.worker`).

Timers: an envelope whose ``not_before`` is in the future goes to the largest delay bucket
(a power of two of milliseconds) not longer than what is left, so it never arrives early;
when it arrives with time still left, the worker sends it on to the next bucket (or sleeps
the last few milliseconds). No plugin is needed (Debian's RabbitMQ has no delayed-message
exchange). Every message is persistent and every publish waits for the broker's confirm.
Envelopes that are due go straight to their partition queue through the default exchange
(the broker's cheapest route); only timers pass through the two topic exchanges.

Several due envelopes of one `send` for one partition travel as one AMQP message (content
type ``application/x-ndjson``: one envelope's JSON per line, in send order; up to
`MAX_BATCH` envelopes or `MAX_BATCH_BYTES`): one publish, one confirm and one ack instead
of one each, which is what a fan-out to agents of one task costs. A lone envelope is sent
as its own JSON (``application/json``). `split_body` gives back the envelopes' bytes.
"""

from __future__ import annotations

import asyncio
import functools
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..envelope import Envelope
from ..errors import ConfigurationError, EnvelopeInvalid, TransportError

MIN_BUCKET_MS = 16
MAX_BUCKET_MS = 2**27  # ~37 hours; longer timers hop through it again
BATCH_CONTENT_TYPE = "application/x-ndjson"
MAX_BATCH = 100
MAX_BATCH_BYTES = 256 * 1024


def split_body(body: bytes, content_type: str | None) -> list[bytes]:
    """The envelopes (JSON bytes each) of one AMQP message `publish` sent: several lines of
    a batch, or the whole body. JSON never holds a raw newline, so lines are envelopes."""
    if content_type == BATCH_CONTENT_TYPE:
        return [line for line in body.split(b"\n") if line]
    return [body]


def aio_pika() -> Any:
    """The aio_pika module, or a `ConfigurationError` naming the extra to install."""
    try:
        import aio_pika as module
    except ImportError:
        raise ConfigurationError(
            "the RabbitMQ transport needs aio-pika: pip install -e '.[workers]'"
        ) from None
    return module


RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


def reconnect_delay(outage: float) -> float:
    """Seconds to wait before the next reconnect attempt, `outage` seconds after the
    connection was lost: `RECONNECT_FIRST` at first, then half the outage so far, at most
    `RECONNECT_MAX`. A broker restart is retried at once; a long outage is not hammered."""
    return min(RECONNECT_MAX, max(RECONNECT_FIRST, outage / 2))


@functools.cache
def backoff_connection() -> Any:
    """aio-pika's robust connection, waiting `reconnect_delay` between reconnect attempts
    (aio-pika's own waits a fixed interval)."""
    from aio_pika.robust_connection import RobustConnection

    class BackoffConnection(RobustConnection):
        _lost_at: float | None = None

        @property
        def reconnect_interval(self) -> float:
            if self.connected.is_set():  # up: the next outage starts from the first delay
                self._lost_at = None
                return RECONNECT_FIRST
            now = time.monotonic()
            if self._lost_at is None:
                self._lost_at = now
            return reconnect_delay(now - self._lost_at)

        @reconnect_interval.setter
        def reconnect_interval(self, value: float) -> None:
            pass  # RobustConnection sets its fixed interval here; the property replaces it

    return BackoffConnection


def partition_of(recipient: str, partitions: int) -> int:
    """The partition of an agent address (``type/key``): a stable hash of the key's first
    segment, the same in every process, so agents sharing a key share a partition."""
    key = recipient.partition("/")[2] or recipient
    return zlib.crc32(key.partition("/")[0].encode()) % partitions


def delay_bucket(seconds: float) -> int | None:
    """The longest bucket (ms) not exceeding `seconds`, or None when under the smallest."""
    ms = int(seconds * 1000)
    if ms < MIN_BUCKET_MS:
        return None
    return min(MAX_BUCKET_MS, 1 << (ms.bit_length() - 1))


class RabbitMQTransport:
    """Sends envelopes to partition queues with publisher confirms; see the module doc.

    `connect()` opens one robust connection (it reconnects with backoff after a broker
    restart or a dropped connection, and re-declares what it declared) and a confirming
    publish channel, and declares the topology.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "cadre",
        partitions: int = 8,
        connection_name: str | None = None,
    ) -> None:
        if partitions < 1:
            raise ConfigurationError("partitions must be at least 1")
        self.url, self.name, self.partitions = url, name, partitions
        self.connection_name = connection_name or f"cadre {name}"
        self.connection: Any = None
        self._channel: Any = None
        self._exchange: Any = None
        self._delay_exchange: Any = None
        self._buckets: set[int] = set()
        self._declare_lock = asyncio.Lock()

    def queue_name(self, partition: int) -> str:
        """The name of partition queue `partition`."""
        return f"{self.name}.p{partition}"

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue's name."""
        return f"{self.name}.dlq"

    async def connect(self) -> None:
        """Connect (robustly) and declare the exchanges and queues."""
        if self.connection is not None:
            return
        pika = aio_pika()
        try:
            self.connection = await pika.connect_robust(
                self.url,
                connection_class=backoff_connection(),
                reconnect_interval=RECONNECT_FIRST,
                client_properties={"connection_name": self.connection_name},
            )
        except Exception as exc:
            raise TransportError(f"cannot connect to RabbitMQ at {self.url}: {exc}") from exc
        self._channel = await self.connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            self.name, pika.ExchangeType.TOPIC, durable=True
        )
        self._delay_exchange = await self._channel.declare_exchange(
            f"{self.name}.delay", pika.ExchangeType.TOPIC, durable=True
        )
        for i in range(self.partitions):
            queue = await self._channel.declare_queue(
                self.queue_name(i),
                durable=True,
                arguments={"x-single-active-consumer": True, "x-queue-version": 2},
            )
            await queue.bind(self._exchange, routing_key=f"#.p{i}")
        await self._channel.declare_queue(self.dlq_name, durable=True)

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Publish every envelope (persistent) and wait for all the broker's confirms."""
        confirms = await self.publish(envelopes)
        results = await asyncio.gather(*confirms, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise TransportError(f"RabbitMQ did not confirm {len(failed)} publish(es): {failed[0]}")

    async def publish(self, envelopes: Sequence[Envelope]) -> list[asyncio.Task[None]]:
        """Start publishing every envelope; one task per envelope ends at its confirm
        (envelopes sent in one AMQP message share a task).

        The publishes start in the order of `envelopes` (a batch where its first envelope
        is) and write to one channel, so each queue receives its envelopes in that order.
        """
        if not envelopes:
            return []
        await self.connect()
        now = datetime.now(UTC)
        due: dict[str, list[tuple[Envelope, bytes]]] = {}  # queue -> its envelopes, in order
        timers: list[tuple[Envelope, str]] = []
        for env in envelopes:
            if env.recipient is None:
                raise EnvelopeInvalid(f"envelope {env.id} has no recipient")
            part = partition_of(env.recipient, self.partitions)
            wait = (env.not_before - now).total_seconds() if env.not_before else 0.0
            bucket = delay_bucket(wait)
            if bucket is None:  # straight to the queue: the default exchange routes cheapest
                due.setdefault(self.queue_name(part), []).append((env, env.to_bytes()))
            else:
                await self._declare_bucket(bucket)
                timers.append((env, f"d{bucket}.p{part}"))
        tasks: dict[int, asyncio.Task[None]] = {}
        for queue, group in due.items():
            for chunk in _chunks(group):
                if len(chunk) == 1:
                    body, content_type = chunk[0][1], "application/json"
                else:
                    body, content_type = b"\n".join(b for _, b in chunk), BATCH_CONTENT_TYPE
                exchange = self._channel.default_exchange
                task = asyncio.create_task(self._publish(exchange, body, queue, content_type))
                for env, _ in chunk:
                    tasks[id(env)] = task
        for env, key in timers:
            tasks[id(env)] = asyncio.create_task(
                self._publish(self._delay_exchange, env.to_bytes(), key, "application/json")
            )
        return [tasks[id(env)] for env in envelopes]

    async def dead_letter(self, body: bytes, headers: dict[str, Any]) -> None:
        """Publish a poison message to the dead-letter queue with its reason in headers."""
        await self.connect()
        pika = aio_pika()
        message = pika.Message(body, headers=headers, delivery_mode=pika.DeliveryMode.PERSISTENT)
        await self._channel.default_exchange.publish(message, routing_key=self.dlq_name)

    async def _publish(self, exchange: Any, body: bytes, key: str, content_type: str) -> None:
        pika = aio_pika()
        message = pika.Message(
            body, delivery_mode=pika.DeliveryMode.PERSISTENT, content_type=content_type
        )
        await exchange.publish(message, routing_key=key)

    async def _declare_bucket(self, ms: int) -> None:
        if ms in self._buckets:
            return
        async with self._declare_lock:
            if ms in self._buckets:
                return
            queue = await self._channel.declare_queue(
                f"{self.name}.delay.{ms}",
                durable=True,
                arguments={"x-message-ttl": ms, "x-dead-letter-exchange": self.name},
            )
            await queue.bind(self._delay_exchange, routing_key=f"d{ms}.*")
            self._buckets.add(ms)

    async def delete_topology(self) -> None:
        """Delete this name's exchanges and queues (tests, teardown)."""
        await self.connect()
        channel = await self.connection.channel()
        names = [self.queue_name(i) for i in range(self.partitions)]
        buckets = [1 << k for k in range(MIN_BUCKET_MS.bit_length() - 1, 28)]
        names += [self.dlq_name, *(f"{self.name}.delay.{ms}" for ms in buckets)]  # any process's
        for queue in names:
            await channel.queue_delete(queue)
        await channel.exchange_delete(self.name)
        await channel.exchange_delete(f"{self.name}.delay")
        await channel.close()

    async def close(self) -> None:
        """Close the connection."""
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


def _chunks(group: list[tuple[Envelope, bytes]]) -> list[list[tuple[Envelope, bytes]]]:
    """`group` in order, cut into batches of at most MAX_BATCH envelopes and (but for a
    lone larger envelope) MAX_BATCH_BYTES."""
    chunks: list[list[tuple[Envelope, bytes]]] = []
    size = 0
    for item in group:
        if not chunks or len(chunks[-1]) >= MAX_BATCH or size + len(item[1]) > MAX_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item[1]) + 1
    return chunks
