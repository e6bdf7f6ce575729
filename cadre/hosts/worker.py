"""The worker host: a long-running process that consumes RabbitMQ partitions and runs steps
on the PostgreSQL store (`cadre worker`).

Each partition queue is consumed on its own channel with prefetch 1, and the queue has a
single active consumer across all workers; a message is acknowledged only after its step
has committed and its outbox is confirmed by the broker. A failing handler is retried in
place (sleep, then run again, the message still unacknowledged), so nothing later in the
partition overtakes it. Dead letters go to the store (``cadre dlq``) and to the ``.dlq``
queue with the reason in headers. SIGTERM stops consuming, lets steps under way finish and
acknowledge, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..envelope import Envelope, new_id, utcnow
from ..errors import EnvelopeInvalid
from ..ids import AgentId
from ..inbox import INBOX_TYPE
from ..messages import Message
from ..processing import Disposition, Processed, Processor, RetryPolicy
from ..registry import Registry, default_registry
from ..step import DEFAULT_SEEN_LIMIT, Step
from ..stores.base import StateStore
from ..transports.rabbitmq import RabbitMQTransport, delay_bucket

log = logging.getLogger("cadre.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker process needs (see `cadre.settings` for the environment names)."""

    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    name: str = "cadre"
    table_prefix: str = "cadre_"
    partitions: int = 8
    concurrency: int = 16
    worker_index: int = 0
    worker_count: int = 1
    standby_delay: float = 1.0
    health_file: Path | None = None
    seen_limit: int = DEFAULT_SEEN_LIMIT


class Worker:
    """Consumes every partition (its own share first, the rest as standby) and runs steps."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        store: StateStore | None = None,
        registry: Registry | None = None,
        policy: RetryPolicy | None = None,
    ) -> None:
        from ..stores.postgres import PostgresStore

        self.config = config
        self.store: StateStore = store or PostgresStore(
            config.postgres_dsn, prefix=config.table_prefix, max_size=config.concurrency + 2
        )
        self.transport = RabbitMQTransport(
            config.rabbitmq_url,
            name=config.name,
            partitions=config.partitions,
            connection_name=f"cadre worker {config.name} {os.getpid()}",
        )
        self.processor = Processor(
            Step(
                self.store,
                self.transport,
                registry=registry or default_registry,
                seen_limit=config.seen_limit,
            ),
            policy=policy,
        )
        self.handled = 0
        self._sem = asyncio.Semaphore(config.concurrency)
        self._consumers: list[tuple[Any, str]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()

    def own_partitions(self) -> list[int]:
        """This worker's share; it consumes the others only as a standby."""
        cfg = self.config
        return [p for p in range(cfg.partitions) if p % cfg.worker_count == cfg.worker_index]

    async def run(self) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT); then drain and close."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.transport.connect()
        health = asyncio.create_task(self._health())
        try:
            own = self.own_partitions()
            for p in own:
                await self._consume(p)
            others = [p for p in range(self.config.partitions) if p not in own]
            if others:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.config.standby_delay)
                for p in others if not self._stopping.is_set() else []:
                    await self._consume(p)
            await self._stopping.wait()
            await self._drain()
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            try:
                await self.transport.close()
            finally:
                await self.store.close()
            if self.config.health_file is not None:
                self.config.health_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Begin a graceful stop: no new deliveries; steps under way finish."""
        self._stopping.set()

    async def _consume(self, partition: int) -> None:
        channel = await self.transport.connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(
            self.transport.queue_name(partition),
            durable=True,
            arguments={"x-single-active-consumer": True, "x-queue-version": 2},
        )
        tag = await queue.consume(self._on_message)
        self._consumers.append((queue, tag))

    async def _drain(self) -> None:
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await self._idle.wait()

    async def _on_message(self, message: Any) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            async with self._sem:
                await self._handle(message)
        except Exception:  # the broker redelivers an unacknowledged message
            log.exception("delivery %s failed; the broker will redeliver it", message.message_id)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _handle(self, message: Any) -> None:
        body: bytes = message.body
        try:
            envelope: Envelope | None = Envelope.from_bytes(body)
        except EnvelopeInvalid:
            envelope = None  # the processor dead-letters it with the reason
        if envelope is not None and envelope.not_before is not None:
            left = (envelope.not_before - datetime.now(UTC)).total_seconds()
            if delay_bucket(left) is not None:  # not due yet: on to the next delay bucket
                await self.transport.send([envelope])
                await message.ack()
                return
            if left > 0:
                await asyncio.sleep(left)
        attempt = envelope.attempt if envelope is not None else 1
        while True:
            processed = await self._process(envelope or body, attempt)
            if processed.disposition is not Disposition.RETRY:
                break
            if self._stopping.is_set():  # back to the head of its queue for the next owner
                await message.nack(requeue=True)
                return
            await asyncio.sleep(processed.retry_after or 0.0)
            attempt += 1
        if processed.dead_letter is not None:
            letter = processed.dead_letter
            await self.transport.dead_letter(
                body,
                {
                    "x-cadre-reason": letter.reason,
                    "x-cadre-detail": letter.detail[:1000],
                    "x-cadre-attempts": letter.attempts,
                    "x-cadre-id": letter.id,
                },
            )
        await message.ack()
        self.handled += 1

    async def _process(self, body: Envelope | bytes, attempt: int) -> Processed:
        try:
            return await self.processor.process(body, attempt=attempt)
        except Exception as exc:  # the store could not even record a dead letter
            log.exception("processing failed; retrying")
            delay = self.processor.policy.delay(attempt)
            return Processed(Disposition.RETRY, retry_after=delay, error=str(exc))

    async def _health(self) -> None:
        path = self.config.health_file
        if path is None:
            return
        while True:
            connection = self.transport.connection
            status = {
                "pid": os.getpid(),
                "time": time.time(),
                "connected": bool(connection is not None and not connection.is_closed),
                "handled": self.handled,
                "in_flight": self._in_flight,
            }
            path.write_text(json.dumps(status))
            await asyncio.sleep(2.0)


async def submit(
    transport: RabbitMQTransport,
    to: AgentId,
    message: Message,
    *,
    task_id: str | None = None,
    reply_to: AgentId | None = None,
) -> Envelope:
    """Send a message from outside any agent (a client, a test) to the workers."""
    task = task_id or new_id()
    envelope = Envelope(
        id=new_id(),
        message=message.message_name,
        version=message.message_version,
        payload=message.model_dump(mode="json"),
        task_id=task,
        recipient=str(to),
        reply_to=str(reply_to) if reply_to else f"{INBOX_TYPE}/{task}",
        created_at=utcnow(),
    )
    await transport.send([envelope])
    return envelope


def config_from_settings(settings: Any, **overrides: Any) -> WorkerConfig:
    """The worker configuration of `cadre.settings.Settings`, with flags applied."""
    values = {
        "rabbitmq_url": settings.rabbitmq_url,
        "postgres_dsn": settings.postgres_dsn,
        "name": settings.queue_name,
        "table_prefix": settings.postgres_prefix,
        "partitions": settings.partitions,
        "concurrency": settings.concurrency,
        "worker_index": settings.worker_index,
        "worker_count": settings.worker_count,
        "health_file": settings.health_file,
        "seen_limit": settings.seen_limit,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return WorkerConfig(**values)


def run_worker(config: WorkerConfig, policy: RetryPolicy | None = None) -> int:
    """Run a worker until SIGTERM; returns the exit code (0 after a graceful stop)."""
    asyncio.run(Worker(config, policy=policy).run())
    return 0


async def migrate(dsn: str, prefix: str) -> None:
    """Create the PostgreSQL tables (``cadre db migrate``)."""
    from ..stores.postgres import PostgresStore

    store = PostgresStore(dsn, prefix=prefix)
    try:
        await store.migrate()
    finally:
        await store.close()
