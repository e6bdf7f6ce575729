"""Moving a queue's messages to a queue of another type or other arguments, in place.

Queue arguments are fixed when a queue is first declared: a partition queue declared as a
classic queue (before quorum queues) or with another delivery limit refuses the current
declaration (PRECONDITION_FAILED). `migrate_queue` then moves its messages to a temporary
quorum queue ``<queue>.moving``, deletes it, declares it anew and moves the messages back,
in order; every move is publish-confirm-then-ack, so a crash at any point loses nothing
(an envelope may arrive twice; the step drops the second). A ``.moving`` queue left by
such a crash is emptied into its partition queue on the next start. A delay bucket's timers
go to their partition queues instead (`migrate_bucket`). One process migrates
at a time (an exclusive lock queue); an old worker still consuming the queue stops the
migration with a `TransportError` saying to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from ...errors import TransportError
from ._connection import aio_pika

log = logging.getLogger("cadre.transport")

LOCK_RETRY = 0.2
"""Seconds between two attempts to take the migration lock another process holds."""


class Admin:
    """A channel for declarations that may fail (a failure closes the channel: the next
    call opens another)."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._channel: Any = None

    async def channel(self) -> Any:
        """An open channel."""
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel()
        return self._channel

    async def declares(self, name: str, arguments: dict[str, Any]) -> bool:
        """Declare a durable queue; False if it exists with other arguments or type."""
        from aiormq.exceptions import ChannelPreconditionFailed

        try:
            await (await self.channel()).declare_queue(name, durable=True, arguments=arguments)
        except ChannelPreconditionFailed:
            self._channel = None
            return False
        return True

    async def exists(self, name: str) -> bool:
        """Whether a queue of that name exists."""
        from aiormq.exceptions import ChannelNotFoundEntity

        try:
            await (await self.channel()).declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            self._channel = None
            return False
        return True

    async def bind(self, name: str, exchange: str, key: str, *, unbind: bool = False) -> None:
        """Bind queue `name` to `exchange` with routing `key` (or remove that binding)."""
        queue = await (await self.channel()).get_queue(name)
        if unbind:
            await queue.unbind(exchange, routing_key=key)
        else:
            await queue.bind(exchange, routing_key=key)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()


@contextlib.asynccontextmanager
async def migration_lock(connection: Any, name: str) -> AsyncIterator[None]:
    """Hold the exclusive queue `name`: one process migrates at a time."""
    from aiormq.exceptions import ChannelLockedResource

    while True:
        channel = await connection.channel()
        try:
            await channel.declare_queue(name, exclusive=True, auto_delete=True)
            break
        except ChannelLockedResource:
            await asyncio.sleep(LOCK_RETRY)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await channel.queue_delete(name)
            await channel.close()


async def move(connection: Any, source: str, target: str | Callable[[str], str]) -> int:
    """Move every message of queue `source` to queue `target` (or the queue `target` names
    for the message's routing key), in order (publish, confirm, then ack each); how many."""
    pika = aio_pika()
    channel = await connection.channel(publisher_confirms=True)
    try:
        queue = await channel.declare_queue(source, passive=True)
        moved = 0
        while (message := await queue.get(fail=False)) is not None:
            headers = {k: v for k, v in (message.headers or {}).items() if k != "x-delivery-count"}
            copy = pika.Message(
                message.body,
                headers=headers,
                content_type=message.content_type,
                message_id=message.message_id,
                delivery_mode=pika.DeliveryMode.PERSISTENT,
            )
            queue_name = target if isinstance(target, str) else target(message.routing_key or "")
            await channel.default_exchange.publish(copy, routing_key=queue_name)
            await message.ack()
            moved += 1
        return moved
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def migrate_queue(
    admin: Admin,
    connection: Any,
    name: str,
    arguments: dict[str, Any],
    binding: tuple[str, str],
) -> int:
    """Redeclare queue `name` with `arguments` (a quorum queue), keeping its messages;
    how many were moved. `binding` (exchange, routing key) is the queue's binding: the
    ``.moving`` queue has it too while `name` is away, so timers that expire meanwhile are
    not dropped. Call it under `migration_lock`."""
    from aiormq.exceptions import ChannelLockedResource, ChannelPreconditionFailed

    exchange, key = binding
    moving = f"{name}.moving"
    moved = 0
    if not await admin.declares(name, arguments):
        await _unconsumed(admin, name)
        await admin.declares(moving, {"x-queue-type": "quorum"})
        try:
            moved += await move(connection, name, moving)
        except ChannelLockedResource:  # a quorum queue with a single active consumer
            channel = await admin.channel()
            left = await channel.declare_queue(moving, passive=True)
            if not left.declaration_result.message_count:
                await channel.queue_delete(moving)
            raise TransportError(
                f"queue {name} is a quorum queue with other arguments than {arguments} "
                "(another delivery limit, or none?): start with the delivery limit it was "
                "created with, or change its limit with a RabbitMQ policy"
            ) from None
        await admin.bind(moving, exchange, key)
        while True:
            moved += await move(connection, name, moving)
            await _unconsumed(admin, name)
            channel = await admin.channel()
            try:
                await channel.queue_delete(name, if_unused=True, if_empty=True)
                break
            except ChannelPreconditionFailed:  # a publish came in meanwhile: move it too
                continue
        if not await admin.declares(name, arguments):
            raise TransportError(f"queue {name} could not be declared anew after its migration")
        await admin.bind(name, exchange, key)
        log.info("migrated queue %s (%d messages) to a quorum queue", name, moved)
    if await admin.exists(moving):
        await admin.bind(moving, exchange, key, unbind=True)  # then nothing more comes in
        await move(connection, moving, name)
        await (await admin.channel()).queue_delete(moving)  # empty (quorum: no if-empty)
    return moved


async def _unconsumed(admin: Admin, name: str) -> None:
    """Refuse to migrate a queue that a worker of the earlier version still consumes."""
    queue = await (await admin.channel()).declare_queue(name, passive=True)
    consumers = queue.declaration_result.consumer_count
    if consumers:
        raise TransportError(
            f"queue {name} is still consumed by {consumers} worker(s) of an older version: "
            "stop them, then start this one (it migrates the queues)"
        )


async def migrate_bucket(
    admin: Admin,
    connection: Any,
    name: str,
    arguments: dict[str, Any],
    queue_of: Callable[[str], str],
) -> int:
    """Redeclare delay bucket `name` with `arguments`; the timers waiting in the old one go
    to the partition queues their routing keys name (a worker sends a timer that is not
    due on to its next bucket), so none is lost and none arrives early. How many moved.
    Call it under `migration_lock`."""
    from aiormq.exceptions import ChannelPreconditionFailed

    moved = 0
    if await admin.declares(name, arguments):
        return moved
    while True:
        moved += await move(connection, name, queue_of)
        try:
            await (await admin.channel()).queue_delete(name, if_unused=True, if_empty=True)
            break
        except ChannelPreconditionFailed:  # a timer came in meanwhile: move it too
            continue
    if not await admin.declares(name, arguments):
        raise TransportError(f"queue {name} could not be declared anew after its migration")
    log.info("migrated delay bucket %s (%d timers) to a quorum queue", name, moved)
    return moved
