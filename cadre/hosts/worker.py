"""The worker host: a long-running process that consumes RabbitMQ partitions and runs steps
on the PostgreSQL store (`cadre worker`).

Each partition queue is consumed on its own channel, and the queue has a single active
consumer across all workers. A delivery from a partition's queue proves this worker is
that partition's active consumer, so a message a step sends to an agent of a partition
this worker owns (in practice: an agent with the same key, the same task) skips the broker
and runs here (*local delivery*): it is durable already, in the sender's committed outbox,
and counts as confirmed once its recipient's step has committed. An outbox that a crash
left behind (nothing else would publish it) is republished through the broker by every
worker's *relay*, which looks for outboxes older than ``relay_after`` seconds.

The channel's prefetch lets the broker hand over several messages at once, and they run
concurrently when they are for different agents; messages for one agent wait for each
other, in delivery order (one chain per agent; local deliveries join the same chains). A
message is acknowledged only after its step has committed and its outbox is confirmed.
A failing handler is retried in place (sleep, then run again, the message still
unacknowledged), so nothing later for that agent overtakes it. Dead letters go to the
store (``cadre dlq``) and to the ``.dlq`` queue with the reason in headers. SIGTERM stops
consuming, lets steps under way finish and acknowledge, returns the messages that have not
started to their queues, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..envelope import Envelope, new_id, utcnow
from ..errors import EnvelopeInvalid, TransportError
from ..ids import AgentId
from ..messages import Message
from ..processing import Disposition, Processed, Processor, RetryPolicy
from ..registry import Registry, default_registry
from ..settings import DEFAULT_CONCURRENCY
from ..step import DEFAULT_SEEN_LIMIT, Step
from ..stores.base import StateStore
from ..transports.rabbitmq import RabbitMQTransport, delay_bucket, partition_of, split_body
from ._acks import AckRuns
from ._confirms import HANDLING, Confirms

log = logging.getLogger("cadre.worker")

FLUSH_MESSAGE = "cadre.FlushOutbox"
"""A worker-to-worker message: publish the recipient's stored outbox (see `Worker._relay`)."""
RELAY_SPACING = 20
"""The relay waits at least this many times its last pass's duration before the next."""


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker process needs (see `cadre.settings` for the environment names)."""

    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    name: str = "cadre"
    table_prefix: str = "cadre_"
    partitions: int = 8
    concurrency: int = DEFAULT_CONCURRENCY
    prefetch: int | None = None
    worker_index: int = 0
    worker_count: int = 1
    standby_delay: float = 1.0
    health_file: Path | None = None
    seen_limit: int = DEFAULT_SEEN_LIMIT
    local_delivery: bool = True
    relay_after: float = 5.0
    step_batch: int = 32


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
        self.store: StateStore = store or PostgresStore(  # writes are group-committed
            config.postgres_dsn, prefix=config.table_prefix, max_size=8
        )
        self.transport = RabbitMQTransport(
            config.rabbitmq_url,
            name=config.name,
            partitions=config.partitions,
            connection_name=f"cadre worker {config.name} {os.getpid()}",
        )
        self.confirms = Confirms(self.store, self.transport)
        if config.local_delivery:
            self.confirms.local = self
        self.acks = AckRuns()
        self.processor = Processor(
            Step(
                self.confirms.store,
                self.confirms.transport,
                registry=registry or default_registry,
                seen_limit=config.seen_limit,
            ),
            policy=policy,
        )
        self.handled = 0
        self.handled_local = 0
        self.handled_together = 0
        self.relayed = 0
        self._active: dict[int, Any] = {}  # partition -> the channel its deliveries came on
        self._flushed: dict[tuple[str, str], float] = {}  # (agent, etag) -> when relayed
        self._sem = asyncio.Semaphore(config.concurrency)
        self._chains: dict[str | None, asyncio.Future[None]] = {}  # agent -> its last message
        self._requeued: set[str] = set()  # agents whose chain was returned to the queue
        self._joins: dict[str | None, int] = {}  # agent -> places taken in its chain so far
        self._waiting: dict[str, list[_Place]] = {}  # agent -> its deliveries not yet started
        self._consumers: list[tuple[Any, str]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = asyncio.Event()

    @property
    def prefetch(self) -> int:
        """Unacknowledged messages per partition channel (default: the concurrency)."""
        return max(1, self.config.prefetch or self.config.concurrency)

    def own_partitions(self) -> list[int]:
        """This worker's share; it consumes the others only as a standby."""
        cfg = self.config
        return [p for p in range(cfg.partitions) if p % cfg.worker_count == cfg.worker_index]

    @property
    def stopping(self) -> bool:
        """Whether a graceful stop has begun."""
        return self._stopping.is_set()

    async def run(self, on_connected: Callable[[], None] | None = None) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT); then drain and close.
        `on_connected` is called once the broker connection is open."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.transport.connect()
        if on_connected is not None:
            on_connected()
        health = asyncio.create_task(self._health())
        relay = asyncio.create_task(self._relay())
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
            await self.confirms.close()  # every confirm (and local delivery) has reported
            with contextlib.suppress(Exception):  # else the relay finds them later
                await self._send_flushes(self.confirms.lost_senders())
        finally:
            for background in (health, relay):
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            try:
                await self.confirms.close()
                await self.acks.wait()
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
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(
            self.transport.queue_name(partition),
            durable=True,
            arguments={"x-single-active-consumer": True, "x-queue-version": 2},
        )
        tag = await queue.consume(functools.partial(self._on_message, partition=partition))
        self._consumers.append((queue, tag))

    async def _drain(self) -> None:
        for queue, tag in self._consumers:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        await self._idle.wait()

    async def _on_message(self, message: Any, partition: int | None = None) -> None:
        # Deliveries start in the order the broker sent them, and nothing here awaits before
        # the message's envelopes take their places in their agents' chains: per-agent
        # order is delivery order. A message may carry several envelopes (see
        # `split_body`); those of one agent run one after another in one place of its chain.
        if partition is not None:  # single active consumer: the partition is ours for now
            with contextlib.suppress(Exception):
                self._active[partition] = message.channel
        groups: dict[str | None, list[tuple[bytes, Envelope | None]]] = {}
        for body in split_body(message.body, message.content_type):
            try:
                envelope: Envelope | None = Envelope.from_bytes(body)
            except EnvelopeInvalid:
                envelope = None  # the processor dead-letters it with the reason
            groups.setdefault(envelope.recipient if envelope else None, []).append((body, envelope))
        places = []
        for agent, items in groups.items():
            previous, mine = self._join_chain(agent)
            place = _Place(message, items, self._joins[agent])
            if agent is not None:
                self._waiting.setdefault(agent, []).append(place)
            places.append((agent, place, previous, mine))
        runs = [self._run_group(agent, place, previous) for agent, place, previous, _ in places]
        returned: list[str | None] = []
        try:
            try:
                if len(runs) == 1:
                    outcomes: list[Any] = [await _outcome(runs[0])]
                else:
                    outcomes = await asyncio.gather(*runs, return_exceptions=True)
                for (agent, *_), outcome in zip(places, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        _quiet_if_lost(message).error(
                            "delivery %s failed; returning it to its queue",
                            message.message_id,
                            exc_info=outcome,
                        )
                    if outcome is None or isinstance(outcome, BaseException):
                        returned.append(agent)
                if returned:  # before any of its agents' next messages may start
                    with contextlib.suppress(Exception):  # a closed channel redelivers it
                        await self._requeue(message, returned)
            finally:
                for agent, _, _, mine in places:
                    self._leave_chain(agent, mine)  # the agent's next message may start
            if not returned and _SKIPPED not in outcomes:
                await self._acknowledge(message, tuple(e for o in outcomes for e in o))
        finally:
            for _ in places:
                self._settled()

    async def _run_group(
        self, agent: str | None, place: _Place, previous: asyncio.Future[None] | None
    ) -> Any:
        """Run one agent's envelopes of one delivery in order, once its chain reaches them:
        the envelopes to be confirmed before the ack, None to return the message to its
        queue, or `_SKIPPED` when its channel is gone (the broker redelivers it).

        The deliveries waiting right behind it in the agent's chain run in the same step
        when they can (`_together`); their places then only hand on the outcome."""
        if previous is not None:
            await previous
        waiting = self._waiting.get(agent) if agent is not None else None
        if waiting and place in waiting:
            waiting.remove(place)
        if place.absorbed is not None:  # committed in an earlier place's step
            return place.absorbed
        message, confirm = place.message, list[Envelope]()
        async with self._sem:
            for n, (body, envelope) in enumerate(place.items):
                if self._stopping.is_set() or (agent is not None and agent in self._requeued):
                    return None
                if _channel_closed(message):
                    return _SKIPPED
                if n == 0 and agent is not None:
                    published = await self._together(agent, place)
                    if published is not None:
                        return published
                published = await self._handle(body, envelope)
                if published is None:
                    return None
                confirm.extend(published)
        return tuple(confirm)

    async def _together(self, agent: str, place: _Place) -> tuple[Envelope, ...] | None:
        """Run `place`'s envelopes and those of the places right behind it in the agent's
        chain (deliveries already here, not local ones) as one step (`Processor.
        process_many`): one load and one commit for up to ``step_batch`` messages. Their
        places get the step's outbox to confirm. None: nothing ran (one at a time then)."""
        limit = min(self.config.step_batch, self.config.seen_limit)
        if limit < 2 or place.alone or not _plain(place.items):
            return None
        later, order, count = [], place.order, len(place.items)
        for other in self._waiting.get(agent, ()):
            if other.order != order + 1 or other.alone or not _plain(other.items):
                break
            if count + len(other.items) > limit or _channel_closed(other.message):
                break
            later.append(other)
            order, count = other.order, count + len(other.items)
        if count < 2:
            return None
        envelopes = [env for p in (place, *later) for _, env in p.items if env is not None]
        processed = await self.processor.process_many(envelopes)
        if processed is None:  # each runs alone now (a failed step of several ran them)
            for p in (place, *later):
                p.alone = True
            return None
        result = processed[0].result
        published = result.published if result is not None else ()
        waiting = self._waiting.get(agent, [])
        for other in later:
            other.absorbed = published
            if other in waiting:
                waiting.remove(other)
        self.handled_together += len(envelopes)
        return published

    def _join_chain(
        self, agent: str | None
    ) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """Take the next place in `agent`'s chain (without awaiting: in call order); the
        previous holder's future (None: first) and this one's, for `_leave_chain`."""
        self._in_flight += 1
        self._idle.clear()
        self._joins[agent] = self._joins.get(agent, 0) + 1
        previous = self._chains.get(agent)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chains[agent] = mine
        return previous, mine

    def _leave_chain(self, agent: str | None, mine: asyncio.Future[None]) -> None:
        mine.set_result(None)
        if self._chains.get(agent) is mine:  # the last in the chain: it ends here
            del self._chains[agent]
            del self._joins[agent]
            self._waiting.pop(agent, None)  # type: ignore[arg-type]
            if agent is not None:
                self._requeued.discard(agent)

    def _settled(self) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    # --- local delivery --------------------------------------------------------------------

    def routes_here(self, envelope: Envelope) -> bool:
        """Whether `envelope` runs here rather than going through the broker: a message due
        now between two agents of one partition (in practice: sharing a key). Every message
        of such a pair takes this path, so they stay in order; if the partition is not this
        worker's when the message's turn comes, `deliver`'s task fails and the sender keeps
        it in its outbox (the partition's next owner publishes it, see `_relay`)."""
        recipient, sender = envelope.recipient, envelope.sender
        if recipient is None or sender is None:
            return False
        if envelope.not_before is not None and envelope.not_before > datetime.now(UTC):
            return False  # a timer: through a delay bucket
        partitions = self.config.partitions
        return partition_of(recipient, partitions) == partition_of(sender, partitions)

    def _owns(self, partition: int) -> bool:
        channel = self._active.get(partition)
        return channel is not None and not getattr(channel, "is_closed", True)

    def deliver(self, envelope: Envelope) -> asyncio.Task[None]:
        """Run `envelope` here, in its agent's chain (placed now, so in publish order).

        The task ends once the recipient's step has committed (or dead-lettered it): that
        is the sender's confirm. It raises `TransportError` if the worker is stopping or
        the partition is no longer its own when the envelope's turn comes: the sender's
        `Confirms` then keeps the envelope in the sender's outbox."""
        previous, mine = self._join_chain(envelope.recipient)
        return asyncio.create_task(self._local(envelope, previous, mine))

    async def _local(
        self, envelope: Envelope, previous: asyncio.Future[None] | None, mine: asyncio.Future[None]
    ) -> None:
        agent = envelope.recipient
        assert agent is not None
        HANDLING.set(envelope)  # its step's commit confirms it (this task's context only)
        try:
            if previous is not None:
                await previous
            async with self._sem:
                part = partition_of(agent, self.config.partitions)
                if self._stopping.is_set() or agent in self._requeued or not self._owns(part):
                    self._requeued.add(agent)  # what follows for the agent is not run either
                    why = "stopping" if self._stopping.is_set() else f"not owning partition {part}"
                    raise TransportError(f"{envelope.id} not run here: the worker is {why}")
                await self._run_local(envelope)
        finally:
            self._leave_chain(agent, mine)
            self._settled()

    async def _run_local(self, envelope: Envelope) -> None:
        attempt = envelope.attempt
        while True:
            processed = await self._process(envelope, attempt)
            if processed.disposition is not Disposition.RETRY:
                break
            if self._stopping.is_set():  # the partition's next owner retries it
                self._requeued.add(envelope.recipient or "")
                raise TransportError(f"{envelope.id} not run: the worker is stopping")
            await asyncio.sleep(processed.retry_after or 0.0)
            attempt += 1
        if processed.dead_letter is not None:
            await self._publish_dead_letter(envelope.to_bytes(), processed)
        self.handled_local += 1

    async def _flush_outbox(self, agent_id: AgentId) -> tuple[Envelope, ...]:
        """Publish an agent's stored outbox (in its chain: before its next step's messages)."""
        record = await self.confirms.store.load(agent_id)
        if not record.outbox:
            return ()
        await self.confirms.transport.send(record.outbox)
        await self.confirms.store.clear_outbox(agent_id, record.etag)  # type: ignore[arg-type]
        return record.outbox

    async def _send_flushes(self, agents: list[str]) -> None:
        """Ask the owners of `agents` (through the broker) to publish their outboxes."""
        if agents:
            await self.transport.send(
                [
                    Envelope(
                        id=new_id(),
                        message=FLUSH_MESSAGE,
                        version=1,
                        payload={},
                        task_id="cadre.relay",
                        recipient=agent,
                        created_at=utcnow(),
                    )
                    for agent in agents
                ]
            )

    async def _relay(self) -> None:
        """Find outboxes a crash left behind (nobody else would publish them): see
        `relay_once`. Every `relay_after / 2` s (±20 %), but at least `RELAY_SPACING` times
        the last pass's duration after it: the store's query is a sequential scan, so on a
        large table the relay stays a small share of the database's time."""
        stale = getattr(self.confirms.inner_store, "stale_outboxes", None)
        after = self.config.relay_after
        if stale is None or after <= 0:
            return
        pause = after / 2
        while True:
            await asyncio.sleep(pause * random.uniform(0.8, 1.2))
            started = time.monotonic()
            try:
                self.relayed += await self.relay_once(stale, after)
            except Exception as exc:  # the store or broker is away: try again later
                log.warning("the outbox relay failed: %s", exc)
            took = time.monotonic() - started
            pause = max(after / 2, RELAY_SPACING * took)
            if pause > after / 2:
                log.info("the outbox relay took %.2f s: next pass in about %.0f s", took, pause)

    async def relay_once(self, stale: Any, older_than: float) -> int:
        """For every outbox unchanged for `older_than` s that this worker is not publishing
        itself, send its agent a flush message through the broker: the agent's partition
        owner publishes the outbox in the agent's chain, so it keeps its place before the
        agent's later messages. Returns how many agents were asked."""
        now = time.monotonic()
        self._flushed = {k: t for k, t in self._flushed.items() if now - t < 4 * older_than}
        asked = []
        for agent_id, etag, _outbox in await stale(older_than):
            key = str(agent_id)
            if self.confirms.in_flight(key) or (key, etag) in self._flushed:
                continue  # under way here, or asked already (lost ones are asked for)
            self._flushed[key, etag] = now
            asked.append(key)
        if asked:
            log.info("asking %d agents to publish the outboxes a crash left", len(asked))
            await self._send_flushes(asked)
        return len(asked)

    # --- settling ----------------------------------------------------------------------------

    async def _acknowledge(self, message: Any, published: tuple[Envelope, ...]) -> None:
        """Ack once the step's outbox is confirmed; if it is not, return the message."""
        try:
            await self.confirms.settle(published)
        except Exception as exc:  # its step is committed: the redelivery republishes the outbox
            _quiet_if_lost(message).log(
                logging.WARNING,
                "delivery %s: %s; returning it to its queue",
                message.message_id,
                exc,
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
                self.acks.settled_alone(message)
            return
        try:
            self.acks.ack(message)
        except Exception as exc:  # a closed channel: the broker redelivers it
            _quiet_if_lost(message).log(
                logging.WARNING,
                "delivery %s could not be acknowledged: %s",
                message.message_id,
                exc,
            )
            return
        self.handled += 1

    async def _requeue(self, message: Any, agents: list[str | None]) -> None:
        """Return a message to its queue; later ones for `agents` follow it there."""
        self._requeued.update(agent for agent in agents if agent is not None)
        await message.nack(requeue=True)
        self.acks.settled_alone(message)

    async def _handle(self, body: bytes, envelope: Envelope | None) -> tuple[Envelope, ...] | None:
        """Run the step; the envelopes to be confirmed before the ack, or None: return the
        message to its queue (the worker is stopping while the handler retries)."""
        if envelope is not None and envelope.message == FLUSH_MESSAGE:
            agent_id = envelope.recipient_id
            if agent_id is not None:
                return await self._flush_outbox(agent_id)
        if envelope is not None and envelope.not_before is not None:
            left = (envelope.not_before - datetime.now(UTC)).total_seconds()
            if delay_bucket(left) is not None:  # not due yet: on to the next delay bucket
                await self.transport.send([envelope])
                return ()
            if left > 0:
                await asyncio.sleep(left)
        attempt = envelope.attempt if envelope is not None else 1
        while True:
            processed = await self._process(envelope or body, attempt)
            if processed.disposition is not Disposition.RETRY:
                break
            if self._stopping.is_set():  # back to the head of its queue for the next owner
                return None
            await asyncio.sleep(processed.retry_after or 0.0)
            attempt += 1
        if processed.dead_letter is not None:
            await self._publish_dead_letter(body, processed)
        return processed.result.published if processed.result is not None else ()

    async def _publish_dead_letter(self, body: bytes, processed: Processed) -> None:
        letter = processed.dead_letter
        assert letter is not None
        await self.transport.dead_letter(
            body,
            {
                "x-cadre-reason": letter.reason,
                "x-cadre-detail": letter.detail[:1000],
                "x-cadre-attempts": letter.attempts,
                "x-cadre-id": letter.id,
            },
        )

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
                "handled_local": self.handled_local,
                "handled_together": self.handled_together,
                "relayed": self.relayed,
                "in_flight": self._in_flight,
            }
            path.write_text(json.dumps(status))
            await asyncio.sleep(2.0)


@dataclass(eq=False, slots=True)
class _Place:
    """One agent's envelopes of one delivery, holding a place in the agent's chain."""

    message: Any
    items: list[tuple[bytes, Envelope | None]]
    order: int  # its place among all of the chain's places (local deliveries' too)
    absorbed: tuple[Envelope, ...] | None = None  # run in an earlier place's step: its outbox
    alone: bool = False  # in a step of several that failed: it runs on its own


def _plain(items: list[tuple[bytes, Envelope | None]]) -> bool:
    """Whether these envelopes may join a step of several: readable, due, not a flush."""
    return all(
        env is not None and env.not_before is None and env.message != FLUSH_MESSAGE
        for _, env in items
    )


_SKIPPED = object()
"""A delivery whose channel closed before its turn: neither acknowledged nor returned."""


async def _outcome(run: Any) -> Any:
    """`run`'s result, or the exception it raised (as `asyncio.gather` would return it)."""
    try:
        return await run
    except Exception as exc:
        return exc


class _Quiet:
    """A logger stand-in that drops what it is told: the connection-loss line says it."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        """Drop the record."""

    def error(self, *args: Any, **kwargs: Any) -> None:
        """Drop the record."""


def _quiet_if_lost(message: Any) -> Any:
    """`log`, or nothing when the delivery's channel is gone: a lost connection fails every
    delivery in flight, and one line (`_worker_log.ConnectionWatch`) reports it."""
    return _Quiet() if _channel_closed(message) else log


def _channel_closed(message: Any) -> bool:
    """Whether the delivery's channel is gone (its unacknowledged messages are redelivered)."""
    try:
        channel = message.channel  # aio-pika raises when the channel is closed
    except Exception:
        return True
    return bool(getattr(channel, "is_closed", False))


async def submit(
    transport: RabbitMQTransport,
    to: AgentId,
    message: Message,
    *,
    task_id: str | None = None,
    reply_to: AgentId | None = None,
) -> Envelope:
    """Send a message from outside any agent (a client, a test) to the workers."""
    from .local import send_from_client

    return await send_from_client(transport, to, message, task_id=task_id, reply_to=reply_to)


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
        "local_delivery": settings.local_delivery,
        "relay_after": settings.relay_after_seconds,
        "step_batch": settings.step_batch,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return WorkerConfig(**values)


def run_worker(config: WorkerConfig, policy: RetryPolicy | None = None) -> int:
    """Run a worker until SIGTERM; returns the exit code (0 after a graceful stop). A
    database that is missing, has no tables or cannot be reached fails it at once
    (`ConfigurationError`, `StoreError`), before it consumes anything."""
    from . import _worker_log

    asyncio.run(check_database(config.postgres_dsn, config.table_prefix))
    worker = Worker(config, policy=policy)
    started = time.monotonic()
    try:
        asyncio.run(_worker_log.logged(worker))
    finally:
        _worker_log.stopped(worker, time.monotonic() - started)
    return 0


async def check_database(dsn: str, prefix: str) -> None:
    """Refuse to start on a database that is not there or not migrated, saying what to do."""
    from ..errors import ConfigurationError
    from ..stores._postgres_admin import database_name, probe, safe_dsn

    found = await probe(dsn, table=f"{prefix}agents")
    if found == "no database":
        raise ConfigurationError(
            f"database {database_name(dsn)!r} does not exist at {safe_dsn(dsn)}: run "
            "`cadre db migrate` (it creates the database and the tables)"
        )
    if found == "no tables":
        raise ConfigurationError(
            f"database {database_name(dsn)!r} has no {prefix}* tables: run `cadre db migrate`"
        )


async def migrate(dsn: str, prefix: str) -> str | None:
    """Create the database if it is missing (and we may), then the PostgreSQL tables
    (``cadre db migrate``); the name of the database it created, if it did."""
    from ..stores._postgres_admin import create_database, probe
    from ..stores.postgres import PostgresStore

    created = await create_database(dsn) if await probe(dsn) == "no database" else None
    store = PostgresStore(dsn, prefix=prefix)
    try:
        await store.migrate()
    finally:
        await store.close()
    return created
