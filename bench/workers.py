"""Workers benchmark: Cadre's durable pipeline (RabbitMQ + PostgreSQL, `cadre worker`
processes) side by side with autogen-ext 0.7.5's gRPC runtime on the same workloads.

Workloads (the message shapes of bench/core.py: an int and a 32-character string), the
same on both sides (same agents, same pairs, same message count):
  ping-pong         C conversations at once (`--chains`, default 32): pinger/k and ponger/k
                    exchange N/C request/response pairs each, one at a time (N = `--pairs`);
                    the C keys k are chosen so that they spread evenly over the partitions
                    (`conversation_keys`), as the keys of many tasks do: the first 32 integers
                    would put 14 conversations on one worker and 18 on the other, and the run
                    would measure CRC-32's luck with 32 keys rather than the second worker;
  serial ping-pong  one conversation (C = 1): every hop waits for the one before, so it
                    measures the latency of a hop, not what a worker can carry;
  fan-out           N publishes to one topic with 10 subscriber agent types (10 N deliveries),
                    from a client as fast as its API lets it: autogen's `publish_message`
                    returns once the message is queued for the host (no round trip, nothing
                    acknowledged); Cadre's `publish` returns at the broker's confirm (the
                    message is durable), so Cadre's client keeps up to FANOUT_WINDOW
                    publishes in flight, and every one is confirmed before the clock stops.
                    `fanout_sequential` (for information) awaits each confirm before the
                    next publish.
Cadre runs on 1 and on 2 worker processes; every step conditionally writes the agent's row
in PostgreSQL (fsync on, group-committed) and every message is a persistent, confirmed
RabbitMQ publish, acknowledged after the commit. autogen runs a GrpcWorkerAgentRuntimeHost
and 1 or 2 GrpcWorkerAgentRuntime workers (in a child process; nothing is persisted or
acknowledged). Step latency (p50/p99) is measured inside the Cadre workers around
`Processor.process`.

    pip install -e ".[bench,workers]" && python bench/workers.py [--pairs 16000] [--chains 32]
    python bench/workers.py --quick           # smaller sizes, one pass, for a smoke check

The last line printed is one JSON object (ratios are Cadre msgs/s / autogen gRPC's). It also
holds `pg_step_limit`, PostgreSQL alone doing a serial conversation's database work (one
connection: load a small row, conditionally upsert it, autocommit, one step after the other;
measured in each pass just before the serial run with one worker, as disk latency drifts),
and `serial_over_pg_limit`, serial ping-pong's msgs/s with one worker over it (goal >= 0.8);
`fanout_1worker_ratio` is the fan-out goal (>= 1).
"""

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from core import (
    SUBSCRIBERS,
    TEXT,
    AEvent,
    APing,
    APong,
    Event,
    Ping,
    Pong,
    Ponger,
    Tally,
)

from cadre import Agent, AgentId, Context, Registry, TypeSubscription, handler
from cadre.envelope import Envelope, new_id, utcnow

RABBITMQ = os.environ.get("CADRE_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("CADRE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PARTITIONS = 8
FANOUT_WINDOW = 64
"""Publishes a fan-out client keeps in flight (awaiting their confirms) at once."""


class CountingPinger(Agent):
    """Sends its ponger (same key) the next Ping when a Pong comes back; remembers the seq."""

    rounds = int(os.environ.get("BENCH_ROUNDS", "0"))

    class State(BaseModel):
        last: int = -1

    @handler
    async def on_pong(self, msg: Pong, ctx: Context) -> None:
        self.state.last = msg.seq
        if msg.seq + 1 < self.rounds:
            ctx.send(AgentId("ponger", self.id.key), Ping(seq=msg.seq + 1, text=msg.text))


def make_registry() -> Registry:
    """The bench agents: pinger, ponger and SUBSCRIBERS tallies on topic `events`."""
    registry = Registry()
    registry.register(CountingPinger, type="pinger")
    registry.register(Ponger, type="ponger")
    for i in range(SUBSCRIBERS):
        registry.register(Tally, type=f"tally{i}")
        registry.add_subscription(TypeSubscription("events", f"tally{i}"))
    return registry


# --- Cadre worker processes -----------------------------------------------------------------


def worker_main() -> None:
    """A worker child: runs until SIGTERM, then writes its step latencies (ms) to a file."""
    from cadre.hosts.worker import Worker, config_from_settings
    from cadre.settings import Settings

    worker = Worker(config_from_settings(Settings.from_env()), registry=make_registry())
    latencies: list[float] = []
    process = worker.processor.process

    async def timed(body: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await process(body, **kwargs)
        finally:
            latencies.append((time.perf_counter() - started) * 1000)

    worker.processor.process = timed  # type: ignore[method-assign]
    process_many = worker.processor.process_many

    async def timed_many(envelopes: Any) -> Any:  # a step of several: each message's latency
        started = time.perf_counter()
        try:
            return await process_many(envelopes)
        finally:
            latencies.extend([(time.perf_counter() - started) * 1000] * len(envelopes))

    worker.processor.process_many = timed_many  # type: ignore[method-assign]
    profile_to = os.environ.get("BENCH_PROFILE")  # a folder: cProfile each worker into it
    if profile_to:
        import cProfile

        with cProfile.Profile() as prof:
            asyncio.run(worker.run())
        prof.dump_stats(Path(profile_to) / f"worker-{os.getpid()}.prof")
    else:
        asyncio.run(worker.run())
    Path(os.environ["BENCH_LATENCY_FILE"]).write_text(json.dumps(latencies))


class CadreCluster:
    """Fresh queues and tables, N worker processes, and a client transport."""

    def __init__(self, workers: int, rounds: int, folder: Path) -> None:
        self.name = f"bench{uuid.uuid4().hex[:8]}"
        self.workers, self.rounds, self.folder = workers, rounds, folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.registry = make_registry()

    async def __aenter__(self) -> "CadreCluster":
        from cadre.stores.postgres import PostgresStore
        from cadre.transports.rabbitmq import RabbitMQTransport

        self.store = PostgresStore(POSTGRES, prefix=f"{self.name}_", max_size=2)
        await self.store.migrate()
        self.transport = RabbitMQTransport(RABBITMQ, name=self.name, partitions=PARTITIONS)
        await self.transport.connect()
        for i in range(self.workers):
            env = {
                **os.environ,
                "BENCH_ROUNDS": str(self.rounds),
                "BENCH_LATENCY_FILE": str(self.folder / f"{self.name}-{i}.json"),
                "CADRE_RABBITMQ_URL": RABBITMQ,
                "CADRE_POSTGRES_URL": POSTGRES,
                "CADRE_POSTGRES_PREFIX": f"{self.name}_",
                "CADRE_QUEUE_NAME": self.name,
                "CADRE_PARTITIONS": str(PARTITIONS),
                "CADRE_CONCURRENCY": os.environ.get("CADRE_CONCURRENCY", "64"),
                "CADRE_WORKER_INDEX": str(i),
                "CADRE_WORKER_COUNT": str(self.workers),
                "CADRE_HEALTH_FILE": str(self.folder / f"{self.name}-{i}.health"),
            }
            cmd = [sys.executable, __file__, "--worker"]
            self.procs.append(subprocess.Popen(cmd, env=env))  # noqa: ASYNC220 (set-up)
        for i in range(self.workers):  # wait until every worker is connected
            health = self.folder / f"{self.name}-{i}.health"
            while not health.exists():  # noqa: ASYNC110 (another process writes it)
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # past the standby delay: every partition has its owner
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(30)
        await self.transport.delete_topology()
        await self.transport.close()
        await self.store.drop()
        await self.store.close()

    def latencies(self) -> list[float]:
        """Every step latency (ms) the workers measured (after they exited)."""
        found: list[float] = []
        for i in range(self.workers):
            path = self.folder / f"{self.name}-{i}.json"
            if path.exists():
                found += json.loads(path.read_text())
        return found

    async def send(self, recipients: list[str], message: Any, reply_to: str | None) -> None:
        """Send from outside any agent, as a client does."""
        task = new_id()
        await self.transport.send(
            [
                Envelope(
                    id=new_id(),
                    message=message.message_name,
                    version=message.message_version,
                    payload=message.model_dump(mode="json"),
                    task_id=task,
                    recipient=recipient,
                    reply_to=reply_to or f"cadre.inbox/{task}",
                    created_at=utcnow(),
                )
                for recipient in recipients
            ]
        )

    async def count_done(self, agent_type: str, field: str, value: int) -> int:
        """How many agents whose type matches `agent_type` (SQL LIKE) have `field` >= `value`."""
        pool = await self.store._open()
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) FROM {self.name}_agents WHERE agent_type LIKE %s"
                f" AND (state::jsonb ->> '{field}')::int >= %s",
                (agent_type, value),
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0


def conversation_keys(chains: int) -> list[str]:
    """`chains` conversation keys, the first integers (as text) whose partitions (of
    PARTITIONS) are not yet full, so every partition holds ceil(chains / PARTITIONS) of
    them: the same keys on both sides (autogen ignores them)."""
    from cadre.transports.rabbitmq import partition_of

    keys: list[str] = []
    per: dict[int, int] = {}
    for n in itertools.count():
        part = partition_of(f"ponger/{n}", PARTITIONS)
        if per.get(part, 0) < -(-chains // PARTITIONS):
            per[part] = per.get(part, 0) + 1
            keys.append(str(n))
            if len(keys) == chains:
                return keys
    raise AssertionError("unreachable")


async def cadre_pingpong(
    workers: int, pairs: int, chains: int, folder: Path
) -> tuple[float, list[float]]:
    """Messages per second for `pairs` ping-pong pairs in `chains` concurrent conversations."""
    rounds = pairs // chains
    async with CadreCluster(workers, rounds, folder) as cluster:
        started = time.perf_counter()
        for key in conversation_keys(chains):
            await cluster.send([f"ponger/{key}"], Ping(seq=0, text=TEXT), reply_to=f"pinger/{key}")
        while await cluster.count_done("pinger", "last", rounds - 1) < chains:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # rarely: each look is a query beside the workers' own
        elapsed = time.perf_counter() - started
    return 2 * rounds * chains / elapsed, cluster.latencies()


async def cadre_fanout(
    workers: int, publishes: int, folder: Path, window: int = FANOUT_WINDOW
) -> tuple[float, list[float]]:
    """Deliveries per second for `publishes` publishes to topic ``events/1`` (SUBSCRIBERS
    agent types subscribe), from a client (`WorkersRuntime.publish`, as `cadre serve`
    publishes) keeping up to `window` publishes in flight (1: one at a time)."""
    from cadre import TopicId
    from cadre.hosts.worker_api import WorkersRuntime

    async with CadreCluster(workers, 0, folder) as cluster:
        client = WorkersRuntime(cluster.store, cluster.transport, registry=cluster.registry)
        topic, slots = TopicId("events", "1"), asyncio.Semaphore(window)

        async def publish(seq: int) -> None:
            async with slots:
                await client.publish(topic, Event(seq=seq, text=TEXT))

        started = time.perf_counter()
        if window == 1:
            for seq in range(publishes):
                await client.publish(topic, Event(seq=seq, text=TEXT))
        else:
            await asyncio.gather(*(publish(seq) for seq in range(publishes)))
        while await cluster.count_done("tally%", "count", publishes) < SUBSCRIBERS:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - started
    return SUBSCRIBERS * publishes / elapsed, cluster.latencies()


# --- PostgreSQL alone: the step limit of one serial conversation on this database ---------


async def pg_step_limit(steps: int) -> float:
    """Steps/s of what a serial conversation needs from PostgreSQL and no more: one
    connection (autocommit) loading a small row, then upserting it (jsonb state, the
    version checked), one step after the other, so one commit (fsync) per step."""
    import psycopg

    table = f"pglimit{uuid.uuid4().hex[:8]}"
    load = f"SELECT state, version FROM {table} WHERE id = %s"
    upsert = (
        f"INSERT INTO {table} AS t (id, state, version) VALUES (%s, %s::jsonb, 1)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = t.version + 1"
        " WHERE t.version = %s"
    )
    async with await psycopg.AsyncConnection.connect(POSTGRES, autocommit=True) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, state jsonb NOT NULL,"
            " version bigint NOT NULL) WITH (fillfactor = 40)"
        )
        try:
            started = time.perf_counter()
            for seq in range(steps):
                key = ("ponger/0", "pinger/0")[seq % 2]  # the two agents, in turn
                cur = await conn.execute(load, (key,))
                row = await cur.fetchone()
                state = json.dumps({"last": seq, "text": TEXT})
                await conn.execute(upsert, (key, state, row[1] if row else 0))
            rate = steps / (time.perf_counter() - started)
        finally:
            await conn.execute(f"DROP TABLE {table}")
    return rate


# --- RabbitMQ alone: the floor under any durable pipeline on this broker -----------------


async def rabbitmq_floor(pairs: int, chains: int) -> float:
    """Msgs/s of the ping-pong pattern on RabbitMQ alone, as Cadre's transport uses it per
    hop (persistent messages on 8 durable single-active-consumer queues, publisher confirms,
    ack after the reply's confirm, prefetch 64) with a bare aio-pika client: no store, no
    agent step. No durable pipeline with a Python client can beat it on this machine."""
    import aio_pika

    rounds, name = pairs // chains, f"floor{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(RABBITMQ)
    publisher = await connection.channel(publisher_confirms=True)
    body = json.dumps({"pad": TEXT * 12}).encode()  # about an envelope's size
    left, done = [chains], asyncio.get_running_loop().create_future()
    queues, tags = [], {}

    async def on_message(message: Any) -> None:
        chain, seq = map(int, message.headers["hop"].split(":"))
        if seq + 1 < 2 * rounds:
            reply = aio_pika.Message(body, headers={"hop": f"{chain}:{seq + 1}"}, delivery_mode=2)
            await publisher.default_exchange.publish(reply, f"{name}.{(chain + seq + 1) % 8}")
        else:
            left[0] -= 1
            if not left[0]:
                done.set_result(None)
        await message.ack()

    try:
        for i in range(8):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=64)
            args = {"x-single-active-consumer": True, "x-queue-version": 2}
            queue = await channel.declare_queue(f"{name}.{i}", durable=True, arguments=args)
            tags[queue.name] = await queue.consume(on_message)
            queues.append(queue)
        started = time.perf_counter()
        for chain in range(chains):
            first = aio_pika.Message(body, headers={"hop": f"{chain}:0"}, delivery_mode=2)
            await publisher.default_exchange.publish(first, f"{name}.{chain % 8}")
        await asyncio.wait_for(done, 300)
        rate = 2 * rounds * chains / (time.perf_counter() - started)
    finally:
        for queue in queues:
            await queue.cancel(tags[queue.name])
            await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
    return rate


# --- autogen-ext gRPC side (run in a child process: its host, its workers) -------------------


async def autogen_run(workload: str, workers: int, size: int, chains: int, port: int) -> float:
    """Msgs/s of one workload on a gRPC host with `workers` GrpcWorkerAgentRuntime workers.

    Ping-pong: `chains` conversations of `size // chains` pairs each (as on Cadre's side)."""
    from autogen_core import MessageContext, RoutedAgent, TypeSubscription, message_handler
    from autogen_core import TopicId as ATopicId
    from autogen_core import try_get_known_serializers_for_type as serializers
    from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHost

    host = GrpcWorkerAgentRuntimeHost(address=f"localhost:{port}")
    host.start()
    runtimes = [GrpcWorkerAgentRuntime(host_address=f"localhost:{port}") for _ in range(workers)]
    for rt in runtimes:
        await rt.start()
        for cls in (APing, APong, AEvent):
            rt.add_message_serializer(serializers(cls))
    done = asyncio.get_running_loop().create_future()
    counts = {"events": 0, "chains": 0}
    rounds = size // chains

    class EventPonger(RoutedAgent):
        @message_handler
        async def on_ping(self, message: APing, ctx: MessageContext) -> None:
            await self.publish_message(
                APong(seq=message.seq, text=message.text), ATopicId("pinger", self.id.key)
            )

    class EventPinger(RoutedAgent):
        @message_handler
        async def on_pong(self, message: APong, ctx: MessageContext) -> None:
            if message.seq + 1 < rounds:
                await self.publish_message(
                    APing(seq=message.seq + 1, text=message.text), ATopicId("ponger", self.id.key)
                )
            else:
                counts["chains"] += 1
                if counts["chains"] == chains and not done.done():
                    done.set_result(None)

    class ATally(RoutedAgent):
        @message_handler
        async def on_event(self, message: AEvent, ctx: MessageContext) -> None:
            counts["events"] += 1
            if counts["events"] == size * SUBSCRIBERS and not done.done():
                done.set_result(None)

    if workload == "pingpong":
        a, b = runtimes[0], runtimes[-1]
        await EventPonger.register(a, "ponger", lambda: EventPonger("ponger"))
        await EventPinger.register(b, "pinger", lambda: EventPinger("pinger"))
        await a.add_subscription(TypeSubscription("ponger", "ponger"))
        await b.add_subscription(TypeSubscription("pinger", "pinger"))
    else:
        for i in range(SUBSCRIBERS):
            rt = runtimes[i % workers]
            await ATally.register(rt, f"tally{i}", lambda: ATally("tally"))
            await rt.add_subscription(TypeSubscription("events", f"tally{i}"))
    await asyncio.sleep(0.5)  # let the host learn every registration and subscription
    started = time.perf_counter()
    if workload == "pingpong":
        for key in conversation_keys(chains):
            await runtimes[0].publish_message(APing(seq=0, text=TEXT), ATopicId("ponger", key))
        messages = 2 * rounds * chains
    else:
        for seq in range(size):
            await runtimes[0].publish_message(AEvent(seq=seq, text=TEXT), ATopicId("events", "1"))
        messages = SUBSCRIBERS * size
    await asyncio.wait_for(done, 300)
    rate = messages / (time.perf_counter() - started)
    for rt in runtimes:
        await rt.stop()
    await host.stop()
    return rate


def autogen_measure(workload: str, workers: int, size: int, chains: int = 1) -> float:
    """Run `autogen_run` in a fresh interpreter (its gRPC threads stay out of this one)."""
    import socket

    with socket.socket() as sock:  # a free port, so a port in use elsewhere cannot fail it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [workload, str(workers), str(size), str(chains), str(port)]
    out = subprocess.run(
        [sys.executable, __file__, "--autogen", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return float(out.stdout.strip().splitlines()[-1])


# --- main ---------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


WORKLOADS = ("pingpong", "serial", "fanout")
"""The workloads, in the order the table shows them (`serial` is ping-pong with C = 1)."""


def measure_pass(args: Any, folder: Path, progress: Any) -> dict[str, tuple[float, list[float]]]:
    """One pass over every workload and worker count: autogen then Cadre, side by side."""
    found: dict[str, tuple[float, list[float]]] = {}
    progress(f"RabbitMQ alone, ping-pong, {args.pairs} pairs in {args.chains} chains and serial")
    found["floor_pingpong"] = (asyncio.run(rabbitmq_floor(args.pairs, args.chains)), [])
    found["floor_serial"] = (asyncio.run(rabbitmq_floor(args.serial_pairs, 1)), [])
    for workers in (1, 2):
        for workload in WORKLOADS:
            chains = {"pingpong": args.chains, "serial": 1}.get(workload, 1)
            size = args.publishes if workload == "fanout" else args.pairs
            if workload == "serial":
                size = args.serial_pairs
            what = f"{workload}, size {size}, {chains} chain(s), {workers} worker(s)"
            progress(f"autogen gRPC {what}")
            kind = "fanout" if workload == "fanout" else "pingpong"
            found[f"autogen_{workload}_{workers}"] = (
                autogen_measure(kind, workers, size, chains),
                [],
            )
            if (workload, workers) == ("serial", 1):  # just before the run it divides
                steps = max(1000, 2 * size)
                progress(f"PostgreSQL alone, {steps} load + conditional upsert steps")
                found["pg_step_limit"] = (asyncio.run(pg_step_limit(steps)), [])
            progress(f"cadre {what}")
            if workload == "fanout":
                found[f"cadre_{workload}_{workers}"] = asyncio.run(
                    cadre_fanout(workers, size, folder)
                )
                if workers == 1:  # for information: a client awaiting each confirm
                    progress(f"cadre {what}, one publish at a time")
                    found["cadre_fanout_sequential_1"] = asyncio.run(
                        cadre_fanout(workers, size, folder, window=1)
                    )
            else:
                found[f"cadre_{workload}_{workers}"] = asyncio.run(
                    cadre_pingpong(workers, size, chains, folder)
                )
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the table and the JSON line; return the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16000, help="ping-pong pairs in all")
    parser.add_argument("--chains", type=int, default=32, help="ping-pong conversations at once")
    parser.add_argument("--serial-pairs", type=int, default=1000, help="serial ping-pong pairs")
    parser.add_argument("--publishes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="passes; medians are reported")
    parser.add_argument("--quick", action="store_true", help="small sizes, one pass")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.serial_pairs, args.publishes, args.repeat = 960, 200, 60, 1

    def progress(text: str) -> None:
        print(f"  … {text}", file=sys.stderr, flush=True)

    passes = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.repeat):
            progress(f"pass {n + 1} of {args.repeat}")
            passes.append(measure_pass(args, Path(tmp), progress))
    return report(args, passes)


def report(args: Any, passes: list[dict[str, tuple[float, list[float]]]]) -> dict[str, Any]:
    """Print the side-by-side table (medians over the passes) and the JSON line."""
    print(
        f"\nCadre workers (RabbitMQ + PostgreSQL) vs autogen-ext 0.7.5 gRPC runtime: "
        f"ping-pong {args.pairs} pairs in {args.chains} conversations, serial ping-pong "
        f"{args.serial_pairs} pairs, fan-out {args.publishes} x {SUBSCRIBERS}; "
        f"median of {len(passes)} pass(es)\n"
    )
    print(f"{'workload':<10} {'workers':>7} {'autogen gRPC':>13} {'cadre':>9} {'ratio':>6}"
          f" {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    rates = {k: statistics.median(p[k][0] for p in passes) for k in passes[0]}
    result: dict[str, Any] = {}
    for workload in WORKLOADS:
        for workers in (1, 2):
            peer, ours = (
                rates[f"autogen_{workload}_{workers}"],
                rates[f"cadre_{workload}_{workers}"],
            )
            steps = [ms for p in passes for ms in p[f"cadre_{workload}_{workers}"][1]]
            p50, p99 = percentile(steps, 50), percentile(steps, 99)
            print(
                f"{workload:<10} {workers:>7} {peer:>13,.0f} {ours:>9,.0f} {ours / peer:>6.2f}"
                f" {p50:>7.2f} {p99:>7.2f}"
            )
            key = f"{workload}_{workers}worker"
            result[f"{key}_ratio"] = round(ours / peer, 3)
            result[f"{key}_p50_ms"] = round(p50, 2)
            result[f"{key}_p99_ms"] = round(p99, 2)
            result[f"{key}_pass_ratios"] = [
                round(
                    p[f"cadre_{workload}_{workers}"][0] / p[f"autogen_{workload}_{workers}"][0], 3
                )
                for p in passes
            ]
    print(
        f"\nRabbitMQ alone (bare aio-pika, persistent, confirmed, acked; no store, no step): "
        f"ping-pong {rates['floor_pingpong']:,.0f} msgs/s, serial {rates['floor_serial']:,.0f}"
    )
    for workload in ("pingpong", "serial"):
        result[f"{workload}_1worker_over_rabbitmq_alone"] = round(
            rates[f"cadre_{workload}_1"] / rates[f"floor_{workload}"], 3
        )
    result["msgs_per_s"] = {k: round(v) for k, v in rates.items()}
    for workload in WORKLOADS:
        result[f"scaling_{workload}_2_over_1"] = round(
            rates[f"cadre_{workload}_2"] / rates[f"cadre_{workload}_1"], 3
        )
    # the two goals of the serial and fan-out gaps: serial over what PostgreSQL allows one
    # conversation (>= 0.8), fan-out with one worker over autogen's (>= 1, the ratio above)
    print(
        f"PostgreSQL alone (one connection, load + conditional upsert, autocommit): "
        f"{rates['pg_step_limit']:,.0f} steps/s; serial ping-pong, 1 worker, is "
        f"{rates['cadre_serial_1'] / rates['pg_step_limit']:.2f} of it"
    )
    result["pg_step_limit"] = round(rates["pg_step_limit"])
    result["serial_over_pg_limit"] = round(rates["cadre_serial_1"] / rates["pg_step_limit"], 3)
    result["pg_step_limit_passes"] = [round(p["pg_step_limit"][0]) for p in passes]
    result["serial_over_pg_limit_passes"] = [
        round(p["cadre_serial_1"][0] / p["pg_step_limit"][0], 3) for p in passes
    ]
    result["fanout_sequential_1worker_ratio"] = round(
        rates["cadre_fanout_sequential_1"] / rates["autogen_fanout_1"], 3
    )
    print(
        f"fan-out, 1 worker, a client awaiting each publish's confirm before the next: "
        f"{rates['cadre_fanout_sequential_1']:,.0f} deliveries/s "
        f"({result['fanout_sequential_1worker_ratio']:.2f} of autogen's)"
    )
    result["chains"] = args.chains
    print()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main()
    elif sys.argv[1:2] == ["--autogen"]:
        workload, workers, size, chains, port = sys.argv[2], *map(int, sys.argv[3:7])
        print(asyncio.run(autogen_run(workload, workers, size, chains, port)))
    else:
        main()
