"""The worker host: a long-running process that consumes RabbitMQ partitions and runs steps
on the PostgreSQL store (`cadre worker`).

Each partition queue is consumed on its own channel, and the queue has a single active
consumer across all workers (`cadre.transports.rabbitmq`). Every worker consumes every
partition; the workers announce themselves to each other (`_membership`), every one
computes the same owner for each partition, and a worker that is not a partition's owner
hands it over to it without breaking any agent's order (`_rebalance`): a worker that joins
gets its share within a few seconds, and one that leaves hands its share on. A message a
step sends to an agent of a partition this worker owns (in practice: an agent with the
same key, the same task) skips the broker and runs here (*local delivery*, `_local`). An
outbox that a crash left behind is republished through the broker by every worker's
*relay* (`_relay`).

Messages for one agent run one at a time in delivery order (`_chains`), several waiting
ones as one step; messages for different agents run concurrently (`_deliveries`). A
message is acknowledged only after its step has committed and its outbox is confirmed
(`_settle`, `_confirms`). A failing handler is retried in place, so nothing later for that
agent overtakes it (`_steps`). Dead letters go to the store (``cadre dlq``) and to the
``.dlq`` queue with the reason in headers. SIGTERM announces that the worker leaves, starts
no more steps, lets those under way finish and acknowledge, then closes the partitions'
channels (the messages that have not started go back to their queues in their order, and
only then to the next consumer), and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..envelope import Envelope
from ..ids import AgentId
from ..messages import Message
from ..processing import Processor
from ..registry import Registry, default_registry
from ..retry import RetryPolicy
from ..settings import DEFAULT_SEEN_LIMIT, Settings, WorkersSettings
from ..step import Step
from ..stores.base import StateStore
from ..transports.rabbitmq import RabbitMQTransport, partition_of
from ._chains import AgentChains
from ._confirms import Confirms
from ._database import check_database, migrate
from ._deliveries import Deliveries, Place
from ._health import Health
from ._local import LocalDelivery
from ._membership import HEARTBEAT, LEASE, Member, Membership
from ._rebalance import SETTLE, Rebalancer
from ._relay import OutboxRelay
from ._settle import Settling
from ._steps import StepRunner

__all__ = ["Worker", "WorkerConfig", "migrate", "run_worker", "submit"]


@dataclass(frozen=True)
class WorkerConfig:
    """What one worker process needs: `config_from_settings` reads it from the environment;
    the defaults are the settings' (`cadre.settings.WorkersSettings`)."""

    rabbitmq_url: str = WorkersSettings.rabbitmq_url
    postgres_dsn: str = WorkersSettings.postgres_dsn
    name: str = WorkersSettings.queue_name
    table_prefix: str = WorkersSettings.postgres_prefix
    partitions: int = WorkersSettings.partitions
    concurrency: int = WorkersSettings.concurrency
    prefetch: int | None = None
    worker_index: int = WorkersSettings.worker_index
    worker_count: int = WorkersSettings.worker_count
    standby_delay: float = 1.0
    health_file: Path | None = WorkersSettings.health_file
    seen_limit: int = DEFAULT_SEEN_LIMIT
    local_delivery: bool = WorkersSettings.local_delivery
    relay_after: float = WorkersSettings.relay_after_seconds
    step_batch: int = WorkersSettings.step_batch
    delivery_limit: int | None = None  # quorum queues with this limit (docs/workers.md)
    health_port: int | None = None
    health_host: str = "0.0.0.0"
    heartbeat: float = HEARTBEAT  # membership (docs/workers.md, "Rebalancing")
    member_lease: float = LEASE
    settle: float = SETTLE


class Worker:
    """Consumes every partition (its pinned share first, if any) and runs steps; hands the
    partitions assigned to other members over to them.

    The lifecycle; the work is done by parts that own their state: the agent chains
    (`_chains`), broker deliveries (`_deliveries`), local delivery (`_local`), settling
    (`_settle`), the steps (`_steps`), publisher confirms (`_confirms`), the outbox
    relay (`_relay`), the membership (`_membership`) and rebalancing (`_rebalance`)."""

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
        # PostgreSQL's extras: connected before the first step, a read cache to forget
        self._postgres = self.store if isinstance(self.store, PostgresStore) else None
        self.transport = RabbitMQTransport(
            config.rabbitmq_url,
            name=config.name,
            partitions=config.partitions,
            connection_name=f"cadre worker {config.name} {os.getpid()}",
            delivery_limit=config.delivery_limit,
        )
        self._stopping = asyncio.Event()
        self._consuming = False
        self.health_port: int | None = None  # the probe endpoint's, once it listens
        stopping = self._stopping.is_set
        slots = asyncio.Semaphore(config.concurrency)
        self.chains: AgentChains[Place] = AgentChains()
        self.local = LocalDelivery(
            self.chains,
            self._run_local,  # self.steps is made below: it needs the step, which needs this
            slots,
            partitions=config.partitions,
            owns=self.transport.owns,
            stopping=stopping,
        )
        self.confirms = Confirms(
            self.store, self.transport, self.local if config.local_delivery else None
        )
        self.processor = Processor(
            Step(
                self.confirms.store,
                self.confirms.transport,
                registry=registry or default_registry,
                seen_limit=config.seen_limit,
            ),
            policy=policy,
        )
        self.steps = StepRunner(self.processor, self.transport, stopping)
        self.settling = Settling(self.confirms, self.chains)
        self.deliveries = Deliveries(
            self.chains,
            self.steps,
            self.settling,
            slots,
            step_batch=config.step_batch,
            seen_limit=config.seen_limit,
            stopping=stopping,
            held=lambda partition: stopping() or self.transport.held(partition),
        )
        stale = getattr(self.store, "stale_outboxes", None)  # PostgreSQL's: others have none
        self.relay = OutboxRelay(
            stale, self.confirms, self.transport, relay_after=config.relay_after
        )
        self.membership = Membership(
            self.transport,
            Member.new(config.worker_index, config.worker_count),
            heartbeat=config.heartbeat,
            lease=config.member_lease,
        )
        self.rebalancer = Rebalancer(
            self.membership,
            self.transport,
            self.deliveries,
            self.chains,
            partitions=config.partitions,
            consume=self._consume,
            lost_senders=self.confirms.lost_senders,
            flush=self.relay.send_flushes,
            stopping=stopping,
            settle=config.settle,
        )

    async def _run_local(self, envelope: Envelope) -> bool:
        return await self.steps.run_local(envelope)

    @property
    def prefetch(self) -> int:
        """Unacknowledged messages per partition channel (default: the concurrency)."""
        return max(1, self.config.prefetch or self.config.concurrency)

    def own_partitions(self) -> list[int]:
        """The partitions consumed first: the pinned share (``worker_index`` of
        ``worker_count``, when the count is above 1), else all of them."""
        cfg = self.config
        return [p for p in range(cfg.partitions) if p % cfg.worker_count == cfg.worker_index]

    def assigned_partitions(self) -> list[int]:
        """The partitions this worker should own by the current membership."""
        me = self.membership.me.id
        return [p for p, owner in sorted(self.rebalancer.owners().items()) if owner == me]

    @property
    def stopping(self) -> bool:
        """Whether a graceful stop has begun."""
        return self._stopping.is_set()

    @property
    def handled(self) -> int:
        """Broker deliveries acknowledged."""
        return self.settling.handled

    @property
    def handled_local(self) -> int:
        """Local deliveries run."""
        return self.local.handled

    @property
    def handled_together(self) -> int:
        """Messages that ran in steps of several."""
        return self.deliveries.handled_together

    @property
    def relayed(self) -> int:
        """Agents asked to publish an outbox a crash left."""
        return self.relay.relayed

    @property
    def consuming(self) -> bool:
        """Whether the worker consumes its own partitions (and has not begun to stop)."""
        return self._consuming and not self._stopping.is_set()

    async def run(self, on_connected: Callable[[], None] | None = None) -> None:
        """Consume until `stop()` (or SIGTERM/SIGINT); then drain and close.
        `on_connected` is called once the broker connection is open."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.transport.connect()
        if self._postgres is not None:  # connected before the first step, not at it
            await self._postgres.connect()
        if on_connected is not None:
            on_connected()
        background = [asyncio.create_task(self.relay.run())]
        rebalancing: list[asyncio.Task[None]] = []
        health = Health(self)
        background.append(asyncio.create_task(health.report()))
        if self.config.health_file is not None:
            background.append(asyncio.create_task(health.write(self.config.health_file)))
        probes = None
        try:
            if self.config.health_port is not None:  # a port in use fails the start
                probes = health.server(self.config.health_host, self.config.health_port)
                await probes.start()
                self.health_port = probes.port
            own = self.own_partitions()
            for p in own:
                await self._consume(p)
            await self.membership.start()  # consuming its first partitions: now it says so
            rebalancing += [
                asyncio.create_task(self.membership.run()),
                asyncio.create_task(self.rebalancer.run()),
            ]
            self._consuming = True
            others = [p for p in range(self.config.partitions) if p not in own]
            if others:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.config.standby_delay)
                for p in others if not self._stopping.is_set() else []:
                    await self._consume(p)
            await self._stopping.wait()
            await self.membership.leave()  # the others reassign its partitions now
            await _cancel(rebalancing)
            await self.rebalancer.close()
            for p in self.transport.consumed():  # nothing starts any more (`stopping` too)
                self.transport.hold(p)
            await self.chains.idle()
            await self.transport.stop_consuming()  # (what has not started goes back, in order)
            await self.confirms.close()  # every confirm (and local delivery) has reported
            with contextlib.suppress(Exception):  # else the relay finds them later
                await self.relay.send_flushes(self.confirms.lost_senders())
        finally:
            await _cancel(rebalancing + background)
            if probes is not None:
                await probes.close()
            try:
                await self.confirms.close()
                await self.transport.close()  # sends the acknowledgements gathered first
            finally:
                await self.store.close()
            if self.config.health_file is not None:
                self.config.health_file.unlink(missing_ok=True)

    def stop(self) -> None:
        """Begin a graceful stop: no new deliveries; steps under way finish."""
        self._stopping.set()

    async def _consume(self, partition: int) -> None:
        await self.transport.consume(
            partition,
            self.deliveries.on_delivery,
            prefetch=self.prefetch,
            on_active=self._took,
        )

    def _took(self, partition: int) -> None:
        """This worker became the partition's active consumer (its first delivery on a new
        channel). Records of its agents that the store cached while this worker last had
        the partition may be stale now (another worker wrote them since), and a read that
        no write follows (a flush message's) would trust them: the store forgets them."""
        if self._postgres is not None:
            n = self.config.partitions
            self._postgres.forget(lambda agent: partition_of(str(agent), n) == partition)
        self.rebalancer.took(partition)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def submit(
    transport: RabbitMQTransport,
    to: AgentId,
    message: Message,
    *,
    task_id: str | None = None,
    reply_to: AgentId | None = None,
) -> Envelope:
    """Send a message from outside any agent (a client, a test) to the workers."""
    from ._client import send_from_client

    return await send_from_client(transport, to, message, task_id=task_id, reply_to=reply_to)


def config_from_settings(settings: Settings, **overrides: Any) -> WorkerConfig:
    """The worker configuration of the settings (`settings.workers`), with flags applied."""
    workers = settings.workers
    values: dict[str, Any] = {
        "rabbitmq_url": workers.rabbitmq_url,
        "postgres_dsn": workers.postgres_dsn,
        "name": workers.queue_name,
        "table_prefix": workers.postgres_prefix,
        "partitions": workers.partitions,
        "concurrency": workers.concurrency,
        "worker_index": workers.worker_index,
        "worker_count": workers.worker_count,
        "health_file": workers.health_file,
        "seen_limit": settings.seen_limit,
        "local_delivery": workers.local_delivery,
        "relay_after": workers.relay_after_seconds,
        "step_batch": workers.step_batch,
        "delivery_limit": workers.delivery_limit,
        "health_port": workers.health_port,
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
