"""Workers benchmark: Cadre's durable pipeline (RabbitMQ + PostgreSQL, `cadre worker`
processes) side by side with autogen-ext 0.7.5's gRPC runtime on the same workloads.

Workloads (the message shapes of bench/core.py: an int and a 32-character string):
  ping-pong  two agents exchange N request/response pairs, one at a time;
  fan-out    N publishes to one topic with 10 subscriber agent types (10 N deliveries).
Cadre runs on 1 and on 2 worker processes; every step reads and conditionally writes the
agent's row in PostgreSQL and every message is a persistent, confirmed RabbitMQ publish.
autogen runs a GrpcWorkerAgentRuntimeHost and 1 or 2 GrpcWorkerAgentRuntime workers (in
this process; nothing is persisted). Step latency (p50/p99) is measured inside the Cadre
workers around `Processor.process`.

    pip install -e ".[bench,workers]" && python bench/workers.py [--pairs 2000] [--publishes 300]

The last line printed is one JSON object (ratios are Cadre msgs/s / autogen gRPC's).
"""

import argparse
import asyncio
import json
import os
import signal
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


class CountingPinger(Agent):
    """Sends the next Ping when a Pong comes back, and remembers the last Pong's seq."""

    class State(BaseModel):
        last: int = -1

    @handler
    async def on_pong(self, msg: Pong, ctx: Context) -> None:
        self.state.last = msg.seq
        if msg.seq + 1 < int(os.environ["BENCH_PAIRS"]):
            ctx.send(AgentId("ponger", "1"), Ping(seq=msg.seq + 1, text=msg.text))


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
    asyncio.run(worker.run())
    Path(os.environ["BENCH_LATENCY_FILE"]).write_text(json.dumps(latencies))


class CadreCluster:
    """Fresh queues and tables, N worker processes, and a client transport."""

    def __init__(self, workers: int, pairs: int, folder: Path) -> None:
        self.name = f"bench{uuid.uuid4().hex[:8]}"
        self.workers, self.pairs, self.folder = workers, pairs, folder
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
                "BENCH_PAIRS": str(self.pairs),
                "BENCH_LATENCY_FILE": str(self.folder / f"{self.name}-{i}.json"),
                "CADRE_RABBITMQ_URL": RABBITMQ,
                "CADRE_POSTGRES_URL": POSTGRES,
                "CADRE_POSTGRES_PREFIX": f"{self.name}_",
                "CADRE_QUEUE_NAME": self.name,
                "CADRE_PARTITIONS": str(PARTITIONS),
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

    async def state(self, agent: AgentId) -> Any:
        """An agent's stored state model."""
        record = await self.store.load(agent)
        model = self.registry.get(agent.type).cls.State
        return model.model_validate_json(record.state) if record.state else model()


async def cadre_pingpong(workers: int, pairs: int, folder: Path) -> tuple[float, list[float]]:
    """Messages per second for `pairs` ping-pong pairs on `workers` worker processes."""
    async with CadreCluster(workers, pairs, folder) as cluster:
        started = time.perf_counter()
        await cluster.send(["ponger/1"], Ping(seq=0, text=TEXT), reply_to="pinger/1")
        while (await cluster.state(AgentId("pinger", "1"))).last < pairs - 1:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    return 2 * pairs / elapsed, cluster.latencies()


async def cadre_fanout(workers: int, publishes: int, folder: Path) -> tuple[float, list[float]]:
    """Deliveries per second for `publishes` publishes to SUBSCRIBERS agent types."""
    async with CadreCluster(workers, 0, folder) as cluster:
        recipients = [f"tally{i}/1" for i in range(SUBSCRIBERS)]
        started = time.perf_counter()
        for seq in range(publishes):
            await cluster.send(recipients, Event(seq=seq, text=TEXT), reply_to=None)
        for i in range(SUBSCRIBERS):
            while (await cluster.state(AgentId(f"tally{i}", "1"))).count < publishes:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    return SUBSCRIBERS * publishes / elapsed, cluster.latencies()


# --- autogen-ext gRPC side (run in a child process: its host, its workers) -------------------


async def autogen_run(workload: str, workers: int, size: int, port: int) -> float:
    """Msgs/s of one workload on a gRPC host with `workers` GrpcWorkerAgentRuntime workers."""
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
    counts = {"events": 0}

    class EventPonger(RoutedAgent):
        @message_handler
        async def on_ping(self, message: APing, ctx: MessageContext) -> None:
            await self.publish_message(
                APong(seq=message.seq, text=message.text), ATopicId("pinger", "1")
            )

    class EventPinger(RoutedAgent):
        @message_handler
        async def on_pong(self, message: APong, ctx: MessageContext) -> None:
            if message.seq + 1 < size:
                await self.publish_message(
                    APing(seq=message.seq + 1, text=message.text), ATopicId("ponger", "1")
                )
            elif not done.done():
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
        await runtimes[0].publish_message(APing(seq=0, text=TEXT), ATopicId("ponger", "1"))
        messages = 2 * size
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


def autogen_measure(workload: str, workers: int, size: int) -> float:
    """Run `autogen_run` in a fresh interpreter (its gRPC threads stay out of this one)."""
    port = 50000 + os.getpid() % 10000
    out = subprocess.run(
        [sys.executable, __file__, "--autogen", workload, str(workers), str(size), str(port)],
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the table and the JSON line; return the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--publishes", type=int, default=300)
    args = parser.parse_args(argv)

    def progress(text: str) -> None:
        print(f"  … {text}", file=sys.stderr, flush=True)

    rates: dict[str, float] = {}
    lat: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            progress(f"autogen gRPC ping-pong, {args.pairs} pairs, {workers} worker(s)")
            rates[f"autogen_pingpong_{workers}"] = autogen_measure("pingpong", workers, args.pairs)
            progress(f"cadre ping-pong, {args.pairs} pairs, {workers} worker process(es)")
            rate, lat[f"pingpong_{workers}"] = asyncio.run(
                cadre_pingpong(workers, args.pairs, Path(tmp))
            )
            rates[f"cadre_pingpong_{workers}"] = rate
            progress(f"autogen gRPC fan-out, {args.publishes} x {SUBSCRIBERS}, {workers} worker(s)")
            rates[f"autogen_fanout_{workers}"] = autogen_measure("fanout", workers, args.publishes)
            progress(f"cadre fan-out, {args.publishes} x {SUBSCRIBERS}, {workers} worker(s)")
            rate, lat[f"fanout_{workers}"] = asyncio.run(
                cadre_fanout(workers, args.publishes, Path(tmp))
            )
            rates[f"cadre_fanout_{workers}"] = rate
    return report(args, rates, lat)


def report(args: Any, rates: dict[str, float], lat: dict[str, list[float]]) -> dict[str, Any]:
    """Print the side-by-side table and the JSON line."""
    print(
        f"\nCadre workers (RabbitMQ + PostgreSQL) vs autogen-ext 0.7.5 gRPC runtime "
        f"({args.pairs} pairs, {args.publishes} publishes x {SUBSCRIBERS} subscribers)\n"
    )
    print(f"{'workload':<10} {'workers':>7} {'autogen gRPC':>13} {'cadre':>9} {'ratio':>6}"
          f" {'p50 ms':>7} {'p99 ms':>7}")  # fmt: skip
    result: dict[str, Any] = {}
    for workload in ("pingpong", "fanout"):
        for workers in (1, 2):
            peer, ours = (
                rates[f"autogen_{workload}_{workers}"],
                rates[f"cadre_{workload}_{workers}"],
            )
            steps = lat[f"{workload}_{workers}"]
            p50, p99 = percentile(steps, 50), percentile(steps, 99)
            print(
                f"{workload:<10} {workers:>7} {peer:>13,.0f} {ours:>9,.0f} {ours / peer:>6.2f}"
                f" {p50:>7.2f} {p99:>7.2f}"
            )
            key = f"{workload}_{workers}worker"
            result[f"{key}_ratio"] = round(ours / peer, 3)
            result[f"{key}_p50_ms"] = round(p50, 2)
            result[f"{key}_p99_ms"] = round(p99, 2)
    result["msgs_per_s"] = {k: round(v) for k, v in rates.items()}
    result["scaling_pingpong_2_over_1"] = round(
        rates["cadre_pingpong_2"] / rates["cadre_pingpong_1"], 3
    )
    result["scaling_fanout_2_over_1"] = round(rates["cadre_fanout_2"] / rates["cadre_fanout_1"], 3)
    print()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main()
    elif sys.argv[1:2] == ["--autogen"]:
        workload, workers, size, port = sys.argv[2], *map(int, sys.argv[3:6])
        print(asyncio.run(autogen_run(workload, workers, size, port)))
    else:
        main()
