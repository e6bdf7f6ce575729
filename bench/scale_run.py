"""A scaled-down real run of team tasks on `cadre worker`, with what each task cost every
component: the per-task figures docs/scaling.md sizes a deployment from, and the run that
bench/scale_model.py's model is checked against.

`--workers` `cadre worker` processes (default settings) start; once they own their
partitions, N team tasks (bench/teams_app.py's: three assistants, 10 messages, the model
answering after `--delay` s) are submitted from this process, 32 at a time (as
bench/teams.py's HTTP client sends them to `cadre serve`), and the run lasts until the
last task is finished (`submit_s`: how long the submissions took). CPU is counted from
the submission of the first task (a worker's start-up is not in it). The run has a
PostgreSQL database of its own (created, dropped afterwards), so the database's commit
count and its backends' CPU are this run's alone; unless `--shared-broker` is given (and
when rabbitmq-server is installed) it also has a RabbitMQ node of its own
(tests/support/rabbitmq_node.py), so the broker's CPU is this run's too. Measured:

  tasks_per_s               tasks completed per second of wall time
  worker_cpu_ms_per_task    the workers' CPU (user + system), per task
  postgres_cpu_ms_per_task  the CPU of this database's backends, per task
  broker_cpu_ms_per_task    the private node's CPU, per task (null on the shared broker)
  transactions_per_task     transactions committed in this database, per task: the steps'
                            group commits, and every read (relay scans, this script's polls)
  rows_written_per_task     rows inserted or updated in the agents table, per task
  steps_per_task            agent messages handled (broker + local deliveries), per task
  broker_deliveries_per_task  messages the workers took from RabbitMQ, per task

    python bench/scale_run.py [--tasks 400] [--workers 1] [--delay 0.1] [--shared-broker]

The machine's cores are shared by all of them, so the per-task CPU is what matters for
sizing; the wall rate is this machine's. The last stdout line is one JSON object.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RABBITMQ = os.environ.get("CADRE_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_SERVER = os.environ.get("CADRE_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")
TASK = "Plan a three-day trip to Lisbon with a budget."


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the live processes among `pids` (children included)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


async def database_figures(url: str, database: str) -> tuple[list[int], int]:
    """The pids of this database's backends and its transactions committed so far."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        pids = [row[0] for row in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        )
        row = await cur.fetchone()
    return pids, int(row[0]) if row else 0


async def rows_written(url: str) -> int:
    """Rows inserted or updated in the agents table so far (the statistics PostgreSQL
    reports, flushed within a second of each transaction)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'cadre_agents'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


class PostgresCpu:
    """CPU of a database's backends, sampled so that backends that come and go count too."""

    def __init__(self, url: str, database: str) -> None:
        self.url, self.database = url, database
        self.seen: dict[int, float] = {}

    async def sample(self) -> None:
        pids, _ = await database_figures(self.url, self.database)
        for pid in pids:
            used = cpu_seconds([pid])
            if used:
                self.seen[pid] = max(self.seen.get(pid, 0.0), used)

    def total(self) -> float:
        return sum(self.seen.values())


async def run(args: Any) -> dict[str, Any]:
    import psycopg

    from cadre.stores.postgres import PostgresStore
    from cadre.transports.rabbitmq import RabbitMQTransport

    node = None
    broker = RABBITMQ
    if not args.shared_broker:
        from tests.support.rabbitmq_node import RabbitMQNode, server_binary

        if server_binary() is not None:
            node = RabbitMQNode()
            await asyncio.to_thread(node.start)
            broker = node.url
    name = f"scale{uuid.uuid4().hex[:8]}"
    database = name
    admin = f"{POSTGRES_SERVER}/postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {database}")
    url = f"{POSTGRES_SERVER}/{database}"
    store = PostgresStore(url, prefix="cadre_", max_size=2)
    await store.migrate()
    transport = RabbitMQTransport(broker, name=name)
    await transport.connect()
    folder = Path(tempfile.mkdtemp(prefix="scale-run-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADRE_")}
    env |= {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CADRE_APP": "bench.teams_app",
        "CADRE_RABBITMQ_URL": broker,
        "CADRE_POSTGRES_URL": url,
        "CADRE_QUEUE_NAME": name,
        "BENCH_MODEL_DELAY": str(args.delay),
        "CADRE_WORKER_COUNT": str(args.workers),
    }
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {}
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from teams_app import team  # registers bench-many in this process too

        from cadre.hosts.worker_api import WorkersRuntime
        from cadre.teams.tasks import Tasks

        for i in range(args.workers):
            worker_env = env | {
                "CADRE_WORKER_INDEX": str(i),
                "CADRE_HEALTH_FILE": str(folder / f"worker-{i}.health"),
            }
            procs.append(
                subprocess.Popen(  # noqa: ASYNC220 (set-up)
                    [sys.executable, "-m", "cadre.cli", "worker"],
                    cwd=ROOT,
                    env=worker_env,
                    stderr=subprocess.DEVNULL,
                )
            )
        for i in range(args.workers):  # connected, and past the standby delay
            while not (folder / f"worker-{i}.health").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        pg = PostgresCpu(admin, database)
        await pg.sample()
        pg_before = pg.total()
        _, commits_before = await database_figures(admin, database)
        rows_before = await rows_written(url)
        broker_before = cpu_seconds([node.proc.pid]) if node and node.proc else 0.0
        worker_before = cpu_seconds([p.pid for p in procs])
        tasks = Tasks(WorkersRuntime(store, transport))  # type: ignore[arg-type]
        started = time.perf_counter()
        gate = asyncio.Semaphore(32)  # as bench/teams.py's HTTP client: 32 at a time

        async def submit(i: int) -> str:
            async with gate:
                return await tasks.submit(team, f"{TASK} ({i})")

        ids = await asyncio.gather(*(submit(i) for i in range(args.tasks)))
        submitted = time.perf_counter() - started
        pool = await store._open()
        while True:
            await pg.sample()
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM cadre_agents WHERE agent_type = 'cadre.team' AND "
                    "state::jsonb ->> 'status' IN ('completed', 'failed', 'cancelled')"
                )
                row = await cur.fetchone()
            if row and row[0] >= args.tasks:
                break
            if time.perf_counter() - started > args.timeout:
                raise AssertionError(f"not all {args.tasks} tasks finished in {args.timeout} s")
            await asyncio.sleep(0.1)
        wall = time.perf_counter() - started
        await pg.sample()
        worker_cpu = cpu_seconds([p.pid for p in procs]) - worker_before
        broker_cpu = cpu_seconds([node.proc.pid]) - broker_before if node and node.proc else None
        _, commits_after = await database_figures(admin, database)
        await asyncio.sleep(2.5)  # the health files are rewritten every 2 s
        handled = local = 0
        for i in range(args.workers):
            status = json.loads((folder / f"worker-{i}.health").read_text() or "{}")
            handled += status.get("handled", 0)
            local += status.get("handled_local", 0)
        statuses = [(await tasks.status(i)).status for i in ids[:20]]
        assert statuses == ["completed"] * len(statuses), statuses
        n = args.tasks
        result = {
            "tasks": n,
            "workers": args.workers,
            "model_delay_s": args.delay,
            "wall_s": round(wall, 2),
            "tasks_per_s": round(n / wall, 1),
            "submit_s": round(submitted, 2),
            "worker_cpu_ms_per_task": round(1000 * worker_cpu / n, 2),
            "postgres_cpu_ms_per_task": round(1000 * (pg.total() - pg_before) / n, 2),
            "broker_cpu_ms_per_task": None
            if broker_cpu is None
            else round(1000 * broker_cpu / n, 2),
            "transactions_per_task": round((commits_after - commits_before) / n, 2),
            "rows_written_per_task": round((await rows_written(url) - rows_before) / n, 2),
            "steps_per_task": round((handled + local) / n, 2),
            "broker_deliveries_per_task": round(handled / n, 2),
            "private_broker": node is not None,
            "cores": os.cpu_count(),
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await transport.close()
        await store.close()
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if node is not None:
            await asyncio.to_thread(node.close)
        else:
            await transport.connect()
            await transport.delete_topology()
            await transport.close()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--delay", type=float, default=0.1, help="model seconds per answer")
    parser.add_argument("--shared-broker", action="store_true", help="use CADRE_RABBITMQ_URL")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
