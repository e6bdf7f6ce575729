"""`RabbitMQTransport`: publishing with confirms, timers through delay buckets, and the
consumers of the partition queues (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ...envelope import Envelope
from ...errors import ConfigurationError, EnvelopeInvalid, TransportError
from ._acks import AckRuns
from ._connection import RECONNECT_FIRST, aio_pika, backoff_connection
from ._consume import Delivery
from ._outgoing import Outgoing
from ._topology import Topology, delay_bucket, partition_of

MEMBER_MESSAGE_TTL_MS = 10_000
"""Announcements older than this are dropped unread (a member queue never grows)."""


class RabbitMQTransport:
    """Sends envelopes to partition queues with publisher confirms, and consumes them.
    With `delivery_limit`, the queues are quorum queues with that limit (see `_topology`).

    `connect()` opens one robust connection (it reconnects with backoff after a broker
    restart or a dropped connection, and re-declares what it declared, consumers too) and
    a confirming publish channel, and declares the topology.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "cadre",
        partitions: int = 8,
        connection_name: str | None = None,
        delivery_limit: int | None = None,
    ) -> None:
        if partitions < 1:
            raise ConfigurationError("partitions must be at least 1")
        if delivery_limit is not None and delivery_limit < 1:
            raise ConfigurationError("the delivery limit must be at least 1")
        self.url, self.name, self.partitions = url, name, partitions
        self.topology = Topology(name, partitions, delivery_limit)
        self.connection_name = connection_name or f"cadre {name}"
        self.connection: Any = None
        self._channel: Any = None
        self._delay_exchange: Any = None
        self._buckets: set[int] = set()
        self._declare_lock = asyncio.Lock()
        self._acks = AckRuns()
        self._outgoing = Outgoing(self._publish_due)
        self._consumers: dict[int, _Consumer] = {}  # partition -> its consumer
        self._active: dict[int, Any] = {}  # partition -> the channel its deliveries came on
        self._held: set[int] = set()  # partitions being released: deliveries must not start
        self._members: Any = None  # the exchange announcements go to (`join_members`)

    def queue_name(self, partition: int) -> str:
        """The name of partition queue `partition`."""
        return self.topology.queue_name(partition)

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue's name."""
        return self.topology.dlq_name

    @property
    def connected(self) -> bool:
        """Whether the broker connection is open now."""
        return bool(self.connection is not None and not self.connection.is_closed)

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
        async with self._declaring() as (connection, channel):
            await self.topology.declare(connection, channel, pika)
        self._channel = await self.connection.channel(publisher_confirms=True)
        self._delay_exchange = await self._channel.get_exchange(
            self.topology.delay_exchange, ensure=False
        )

    @contextlib.asynccontextmanager
    async def _declaring(self) -> AsyncIterator[tuple[Any, Any]]:
        """A plain connection (and a channel of it) for declarations, closed after. Not the
        robust one: it replays on every reconnect what its channels declared, and reopens
        a channel the broker closed (a declaration refused, as `_migrate` expects some to
        be), so each would stay with it for good."""
        pika = aio_pika()
        try:
            connection = await pika.connect(
                self.url,
                client_properties={"connection_name": f"{self.connection_name} (declarations)"},
            )
        except Exception as exc:
            raise TransportError(f"cannot connect to RabbitMQ at {self.url}: {exc}") from exc
        try:
            yield connection, await connection.channel()
        finally:
            with contextlib.suppress(Exception):
                await connection.close()

    def watch(
        self, lost: Callable[[BaseException | None], None], restored: Callable[[], None]
    ) -> None:
        """Call `lost` when the connection drops and `restored` once it is back (and the
        channels and consumers with it). Only after `connect()`."""
        self.connection.close_callbacks.add(lambda _connection, exc=None: lost(exc))
        self.connection.reconnect_callbacks.add(lambda _connection: restored())

    # --- publishing --------------------------------------------------------------------------

    async def send(self, envelopes: Sequence[Envelope]) -> None:
        """Publish every envelope (persistent) and wait for all the broker's confirms."""
        confirms = await self.publish(envelopes)
        results = await asyncio.gather(*confirms, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise TransportError(f"RabbitMQ did not confirm {len(failed)} publish(es): {failed[0]}")

    async def publish(self, envelopes: Sequence[Envelope]) -> list[asyncio.Future[None]]:
        """Start publishing every envelope; one future per envelope ends at its confirm
        (the envelopes of one queue share one).

        Due envelopes go out at the end of this loop iteration, together with those of the
        other publishes of the iteration, per queue (`_outgoing`); each queue receives its
        envelopes in the order given, after those of earlier publishes.
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
        futures: dict[int, asyncio.Future[None]] = {}
        for queue, group in due.items():  # gathered with this iteration's other publishes
            future = self._outgoing.add(queue, group)
            for env, _ in group:
                futures[id(env)] = future
        for env, key in timers:
            futures[id(env)] = asyncio.ensure_future(
                self._publish(self._delay_exchange, env.to_bytes(), key, "application/json")
            )
        return [futures[id(env)] for env in envelopes]

    async def dead_letter(
        self, body: bytes, *, reason: str, detail: str, attempts: int, letter_id: str
    ) -> None:
        """Publish a poison message to the dead-letter queue with its reason in headers
        (``x-cadre-reason``, ``-detail``, ``-attempts``, ``-id``)."""
        await self.connect()
        pika = aio_pika()
        headers = {
            "x-cadre-reason": reason,
            "x-cadre-detail": detail[:1000],
            "x-cadre-attempts": attempts,
            "x-cadre-id": letter_id,
        }
        message = pika.Message(body, headers=headers, delivery_mode=pika.DeliveryMode.PERSISTENT)
        await self._channel.default_exchange.publish(message, routing_key=self.dlq_name)

    async def until_due(self, envelope: Envelope) -> bool:
        """Whether a delivered envelope may run now. A timer that arrives with time still
        left goes on to its next delay bucket (False: it runs when it comes back from
        there); under the smallest bucket, this waits out the last few milliseconds."""
        if envelope.not_before is None:
            return True
        left = (envelope.not_before - datetime.now(UTC)).total_seconds()
        if delay_bucket(left) is not None:
            await self.send([envelope])
            return False
        if left > 0:
            await asyncio.sleep(left)
        return True

    async def _publish_due(self, queue: str, body: bytes, content_type: str) -> None:
        """Publish to a partition queue through the default exchange (the cheapest route)."""
        await self._publish(self._channel.default_exchange, body, queue, content_type)

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
            async with self._declaring() as (connection, channel):
                await self.topology.declare_bucket(
                    connection, channel, self.topology.delay_exchange, ms
                )
            self._buckets.add(ms)

    # --- consuming ---------------------------------------------------------------------------

    async def consume(
        self,
        partition: int,
        on_delivery: Callable[[Delivery], Awaitable[None]],
        *,
        prefetch: int,
        on_active: Callable[[int], None] | None = None,
    ) -> None:
        """Consume partition queue `partition` on a channel of its own with `prefetch`
        unacknowledged messages. The queue has a single active consumer across all
        processes: deliveries come only while this one is it (see `owns`); `on_active`
        is called with the partition at the first delivery on this channel."""
        await self.connect()
        if partition in self._consumers:
            raise TransportError(f"partition {partition} is consumed already")
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(
            self.queue_name(partition), durable=True, arguments=self.topology.partition_arguments()
        )
        consumer = _Consumer(channel, queue)
        self._consumers[partition] = consumer

        async def on_message(message: Any) -> None:
            if self._consumers.get(partition) is consumer and partition not in self._held:
                with contextlib.suppress(Exception):  # a closed channel: not ours any more
                    if self._active.get(partition) is not message.channel:
                        self._active[partition] = message.channel
                        if on_active is not None:
                            on_active(partition)
            await on_delivery(Delivery(message, partition, self._acks))

        consumer.tag = await queue.consume(on_message)

    def consumed(self) -> list[int]:
        """The partitions this process has a consumer on (active or standing by)."""
        return sorted(self._consumers)

    def owns(self, partition: int) -> bool:
        """Whether this process is the partition's active consumer: a delivery came from
        its queue on a channel that is still open, and it is not releasing it (`hold`)."""
        channel = self._active.get(partition)
        if channel is None or partition in self._held:
            return False
        return not getattr(channel, "is_closed", True)

    def hold(self, partition: int) -> None:
        """Begin releasing `partition`: `owns` is False and `held` True from now on, so the
        host starts none of its deliveries any more (they stay unacknowledged until
        `stop_consuming` closes the channel)."""
        if partition in self._consumers:
            self._held.add(partition)

    def held(self, partition: int) -> bool:
        """Whether `partition` is being released (its deliveries must not start)."""
        return partition in self._held

    async def stop_consuming(self, partition: int | None = None) -> None:
        """Stop consuming `partition` (None: every partition): send the acknowledgements
        gathered, then close its channel. The broker puts the deliveries not acknowledged
        back in their queue in their original order and only then makes the next consumer
        active, so nothing of this process's runs beside the next one's. (A basic.cancel
        keeps the unacknowledged deliveries here, out of the queue, while the next consumer
        is made active; on RabbitMQ 3.10 that consumer then got nothing at all for seconds,
        not even the messages ready in the queue: tests/adapters/test_rabbitmq_release.py.)"""
        await self._acks.wait()
        parts = list(self._consumers) if partition is None else [partition]
        for part in parts:
            consumer = self._consumers.get(part)
            if consumer is not None:  # held (if it was) until closed: nothing new starts
                with contextlib.suppress(Exception):
                    await consumer.channel.close()
            self._consumers.pop(part, None)
            self._active.pop(part, None)
            self._held.discard(part)

    # --- membership (see cadre.hosts._membership) --------------------------------------------

    async def join_members(self, member: str, on_message: Callable[[bytes], None]) -> None:
        """Hear every announcement sent to this name's members exchange (fanout), on an
        exclusive queue of `member`'s that goes with this connection (restored with it)."""
        await self.connect()
        pika = aio_pika()
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.topology.members_exchange, pika.ExchangeType.FANOUT, durable=True
        )
        queue = await channel.declare_queue(
            self.topology.member_queue(member),
            exclusive=True,
            auto_delete=True,
            arguments={"x-message-ttl": MEMBER_MESSAGE_TTL_MS},
        )
        await queue.bind(exchange)

        async def on_announcement(message: Any) -> None:
            on_message(message.body)

        await queue.consume(on_announcement, no_ack=True)
        self._members = exchange

    async def announce(self, body: bytes) -> None:
        """Send an announcement to every member (not persistent, not confirmed)."""
        if self._members is None:
            return
        await self._members.publish(aio_pika().Message(body), routing_key="")

    async def member_present(self, member: str) -> bool:
        """Whether `member`'s exclusive queue exists (its process's connection is open)."""
        from aiormq.exceptions import ChannelNotFoundEntity

        async with self._declaring() as (_connection, channel):
            try:
                await channel.declare_queue(self.topology.member_queue(member), passive=True)
            except ChannelNotFoundEntity:
                return False
            except Exception:  # RESOURCE_LOCKED: exclusive to its owner, so it is there
                return True
        return True

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each partition queue and each delay bucket this process has
        declared, by queue name (a passive declaration each; not those delivered and not
        yet acknowledged)."""
        await self.connect()
        names = [self.queue_name(i) for i in range(self.partitions)]
        names += [self.topology.bucket_name(ms) for ms in sorted(self._buckets)]
        channel = await self.connection.channel()
        try:
            depths = {}
            for name in names:
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count)
            return depths
        finally:
            await channel.close()

    # --- teardown ----------------------------------------------------------------------------

    async def delete_topology(self) -> None:
        """Delete this name's exchanges and queues (tests, teardown)."""
        await self.connect()
        channel = await self.connection.channel()
        await self.topology.delete(channel)
        await channel.close()

    async def close(self) -> None:
        """Send the acknowledgements gathered, then close the connection."""
        await self._acks.wait()
        if self.connection is not None:
            await self.connection.close()
            self.connection = None


class _Consumer:
    """A partition queue's consumer: its channel (closed to stop it) and queue."""

    __slots__ = ("channel", "queue", "tag")

    def __init__(self, channel: Any, queue: Any) -> None:
        self.channel, self.queue = channel, queue
        self.tag: str | None = None
