"""Where envelopes go: the exchanges and queues of one name, partitions and delay buckets.

Partition queues have a single active consumer. With a delivery limit (`delivery_limit`),
partition queues and delay buckets are quorum queues (replicated on a cluster, the type
RabbitMQ recommends for durable work), and a message delivered `delivery_limit` times and
returned once more without an acknowledgement (a worker process died with it) goes to the
dead-letter queue with ``x-first-death-reason: delivery_limit``. Without one (the default)
they are classic queues, which count no deliveries: RabbitMQ 3.10 fails to give a quorum
queue's single active consumer back after its node crashed (see docs/workers.md). Classic
queues found where quorum queues are asked for are migrated in place (`_migrate`).
"""

from __future__ import annotations

import zlib
from typing import Any

from ._migrate import Admin, migrate_bucket, migrate_queue, migration_lock

MIN_BUCKET_MS = 16
MAX_BUCKET_MS = 2**27  # ~37 hours; longer timers hop through it again
BATCH_CONTENT_TYPE = "application/x-ndjson"
DELIVERY_LIMIT = 20
"""A delivery limit to choose when turning quorum queues on (RabbitMQ 4's default)."""


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


def split_body(body: bytes, content_type: str | None) -> list[bytes]:
    """The envelopes (JSON bytes each) of one AMQP message `publish` sent: several lines of
    a batch, or the whole body. JSON never holds a raw newline, so lines are envelopes."""
    if content_type == BATCH_CONTENT_TYPE:
        return [line for line in body.split(b"\n") if line]
    return [body]


class Topology:
    """The names and arguments of one name's exchanges and queues, and their declaration."""

    def __init__(self, name: str, partitions: int, delivery_limit: int | None = None) -> None:
        self.name, self.partitions, self.delivery_limit = name, partitions, delivery_limit

    def queue_name(self, partition: int) -> str:
        """The name of partition queue `partition`."""
        return f"{self.name}.p{partition}"

    @property
    def dlq_name(self) -> str:
        """The dead-letter queue's name."""
        return f"{self.name}.dlq"

    @property
    def delay_exchange(self) -> str:
        """The topic exchange timers are published to."""
        return f"{self.name}.delay"

    def bucket_name(self, ms: int) -> str:
        """The delay bucket queue holding timers for `ms` milliseconds."""
        return f"{self.name}.delay.{ms}"

    @property
    def members_exchange(self) -> str:
        """The fanout exchange workers announce themselves on (`cadre.hosts._membership`)."""
        return f"{self.name}.members"

    def member_queue(self, member: str) -> str:
        """The exclusive queue where worker `member` hears the announcements."""
        return f"{self.name}.members.{member}"

    @property
    def lock_name(self) -> str:
        """The exclusive queue a process holds while it migrates queues."""
        return f"{self.name}.migrating"

    def partition_arguments(self) -> dict[str, Any]:
        """The arguments every declaration of a partition queue uses (they must match)."""
        if self.delivery_limit is None:
            return {"x-single-active-consumer": True, "x-queue-version": 2}
        return {
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.dlq_name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def bucket_arguments(self, ms: int) -> dict[str, Any]:
        """A delay bucket's arguments: its messages expire after `ms` back to the exchange."""
        if self.delivery_limit is None:
            return {"x-message-ttl": ms, "x-dead-letter-exchange": self.name}
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": ms,
            "x-dead-letter-exchange": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare(self, connection: Any, channel: Any, pika: Any) -> tuple[Any, Any]:
        """Declare the exchanges, the partition queues (migrating old ones) and the
        dead-letter queue; the exchange for due timers and the delay exchange."""
        exchange = await channel.declare_exchange(self.name, pika.ExchangeType.TOPIC, durable=True)
        delay = await channel.declare_exchange(
            self.delay_exchange, pika.ExchangeType.TOPIC, durable=True
        )
        await channel.declare_queue(self.dlq_name, durable=True)
        admin = Admin(connection)
        try:
            for i in range(self.partitions):
                name, binding = self.queue_name(i), (self.name, f"#.p{i}")
                await self._declare(admin, connection, name, self.partition_arguments(), binding)
        finally:
            await admin.close()
        for i in range(self.partitions):
            queue = await channel.declare_queue(
                self.queue_name(i), durable=True, arguments=self.partition_arguments()
            )
            await queue.bind(exchange, routing_key=f"#.p{i}")
        return exchange, delay

    async def declare_bucket(
        self, connection: Any, channel: Any, delay_exchange: Any, ms: int
    ) -> None:
        """Declare the delay bucket of `ms` milliseconds (migrating an old one) and bind it."""
        name, arguments = self.bucket_name(ms), self.bucket_arguments(ms)
        admin = Admin(connection)
        try:
            if not await admin.declares(name, arguments):
                async with migration_lock(connection, self.lock_name):
                    await migrate_bucket(admin, connection, name, arguments, self._timer_queue)
        finally:
            await admin.close()
        queue = await channel.declare_queue(name, durable=True, arguments=arguments)
        await queue.bind(delay_exchange, routing_key=f"d{ms}.*")

    def _timer_queue(self, routing_key: str) -> str:
        """The partition queue of a timer's routing key (``d<ms>.p<i>``); the dead-letter
        queue for a key that names no partition."""
        _, _, part = routing_key.rpartition(".p")
        if part.isdigit() and int(part) < self.partitions:
            return self.queue_name(int(part))
        return self.dlq_name

    async def _declare(
        self,
        admin: Admin,
        connection: Any,
        name: str,
        arguments: dict[str, Any],
        binding: tuple[str, str],
    ) -> None:
        """Declare a queue; migrate it (under the lock) if it exists with other arguments
        or a crash left its ``.moving`` queue."""
        if await admin.declares(name, arguments) and not await admin.exists(f"{name}.moving"):
            return
        async with migration_lock(connection, self.lock_name):
            await migrate_queue(admin, connection, name, arguments, binding)

    def all_queue_names(self) -> list[str]:
        """Every queue this name may have (any process's delay buckets too)."""
        buckets = [1 << k for k in range(MIN_BUCKET_MS.bit_length() - 1, 28)]
        names = [self.queue_name(i) for i in range(self.partitions)]
        names += [self.dlq_name, *(self.bucket_name(ms) for ms in buckets)]
        return [*names, *(f"{n}.moving" for n in names if n != self.dlq_name)]

    async def delete(self, channel: Any) -> None:
        """Delete this name's exchanges and queues (tests, teardown)."""
        for queue in self.all_queue_names():
            await channel.queue_delete(queue)
        await channel.exchange_delete(self.name)
        await channel.exchange_delete(self.delay_exchange)
        await channel.exchange_delete(self.members_exchange)
