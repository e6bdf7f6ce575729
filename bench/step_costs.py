"""Step costs: what one agent step costs in PostgreSQL and RabbitMQ on this machine, each
piece alone, one after another (latency), so a worker's step can be taken apart and a
deployment sized from the pieces (docs/scaling.md, bench/scale_model.py).

PostgreSQL (one connection, autocommit, prepared statements, a fresh table of small rows):
  select1        `SELECT 1`: the round trip alone
  load           a row by primary key (what a step's load costs when not cached)
  upsert         a conditional upsert of one jsonb row, committed (fsync): a lone save
  upsert_async   the same with synchronous_commit off: the upsert without the flush
  step           load + upsert: the serial step limit bench/workers.py reports (pg_step_limit)
  batch32        one statement upserting 32 rows (unnest of arrays), committed: a group
                 commit; `batch32_per_row` is its cost per row
  bulk           `--bulk-seconds` of N connections (`--connections`, default 4) doing upsert
                 batches of 32 at once: the rows/s PostgreSQL takes on this machine
RabbitMQ (the shared broker, a fresh durable queue, persistent messages; `rabbitmq` on a
classic queue, `rabbitmq_quorum` the same on a quorum queue, one node, so no replica):
  publish_confirm  one publish, then wait for its confirm
  round_trip       publish (confirmed), consume, ack: one hop through the broker
  pipelined        `--messages` publishes, then every confirm: messages/s a client gets

    python bench/step_costs.py [--samples 2000] [--json-only]

Medians and 90th percentiles in microseconds; the last stdout line is one JSON object.
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

RABBITMQ = os.environ.get("CADRE_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("CADRE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
STATE = json.dumps({"last": 0, "text": "x" * 32, "history": list(range(8))})
BATCH = 32


def summary(samples: list[float]) -> dict[str, float]:
    """Median and 90th percentile of `samples` (seconds) in microseconds."""
    ordered = sorted(samples)
    return {
        "p50_us": round(statistics.median(ordered) * 1e6, 1),
        "p90_us": round(ordered[int(0.9 * (len(ordered) - 1))] * 1e6, 1),
    }


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """`n` sequential calls of `call(i)`, each timed (after 50 untimed warm-up calls)."""
    for i in range(50):
        await call(-1 - i)
    found = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        found.append(time.perf_counter() - started)
    return found


async def postgres_costs(samples: int, bulk_seconds: float, connections: int) -> dict[str, Any]:
    import psycopg

    table = f"costs{uuid.uuid4().hex[:8]}"
    upsert = (
        f"INSERT INTO {table} AS t (id, state, version) VALUES (%s, %s::jsonb, 1)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = t.version + 1"
        " WHERE t.version = %s"
    )
    batch = (
        f"INSERT INTO {table} AS t (id, state, version)"
        " SELECT i.id, i.state::jsonb, 1 FROM unnest(%s::text[], %s::text[]) AS i(id, state)"
        " ON CONFLICT (id) DO UPDATE SET state = excluded.state, version = t.version + 1"
    )
    load = f"SELECT state, version FROM {table} WHERE id = %s"
    found: dict[str, Any] = {}
    connect = psycopg.AsyncConnection.connect
    async with await connect(POSTGRES, autocommit=True, prepare_threshold=1) as conn:
        await conn.execute(
            f"CREATE TABLE {table} (id text PRIMARY KEY, state jsonb NOT NULL,"
            " version bigint NOT NULL) WITH (fillfactor = 40)"
        )
        try:
            versions: dict[str, int] = {}

            async def select1(i: int) -> None:
                await (await conn.execute("SELECT 1")).fetchone()

            async def do_load(i: int) -> None:
                await (await conn.execute(load, (f"a{i % 64}",))).fetchone()

            async def do_upsert(i: int) -> None:
                key = f"a{i % 64}"
                version = versions.get(key, 0)
                await conn.execute(upsert, (key, STATE, version))
                versions[key] = version + 1

            async def do_step(i: int) -> None:
                row = await (await conn.execute(load, (f"a{i % 64}",))).fetchone()
                await conn.execute(upsert, (f"a{i % 64}", STATE, row[1] if row else 0))

            async def do_batch(i: int) -> None:
                keys = [f"b{i % 4}-{j}" for j in range(BATCH)]
                await conn.execute(batch, (keys, [STATE] * BATCH))

            found["select1"] = summary(await timed(samples, select1))
            found["load"] = summary(await timed(samples, do_load))
            versions.clear()
            await conn.execute(f"TRUNCATE {table}")
            found["upsert"] = summary(await timed(samples, do_upsert))
            await conn.execute("SET synchronous_commit TO off")
            found["upsert_async"] = summary(await timed(samples, do_upsert))
            await conn.execute("SET synchronous_commit TO on")
            step = await timed(samples, do_step)
            found["step"] = summary(step)
            found["step_per_s"] = round(len(step) / sum(step))
            found["batch32"] = summary(await timed(max(200, samples // 8), do_batch))
            found["batch32_per_row_us"] = round(found["batch32"]["p50_us"] / BATCH, 1)
            found["bulk"] = await bulk(table, batch, bulk_seconds, connections)
        finally:
            await conn.execute(f"DROP TABLE {table}")
    return found


async def bulk(table: str, batch: str, seconds: float, connections: int) -> dict[str, Any]:
    """Rows/s that `connections` connections upserting 32-row batches get together."""
    import psycopg

    rows = [0]
    deadline = time.perf_counter() + seconds

    async def one(c: int) -> None:
        connect = psycopg.AsyncConnection.connect
        async with await connect(POSTGRES, autocommit=True, prepare_threshold=1) as conn:
            n = 0
            while time.perf_counter() < deadline:
                keys = [f"c{c}-{(n * BATCH + j) % 4096}" for j in range(BATCH)]
                await conn.execute(batch, (keys, [STATE] * BATCH))
                rows[0] += BATCH
                n += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(connections)))
    return {
        "connections": connections,
        "rows_per_s": round(rows[0] / (time.perf_counter() - started)),
    }


QUEUE_TYPES = {
    "classic": {"x-queue-version": 2},
    "quorum": {"x-queue-type": "quorum"},  # a Raft log, fsynced; one node: no replica here
}


async def rabbitmq_costs(samples: int, messages: int, kind: str) -> dict[str, Any]:
    import aio_pika

    connection = await aio_pika.connect(RABBITMQ)
    found: dict[str, Any] = {}
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            f"costs{uuid.uuid4().hex[:8]}", durable=True, arguments=QUEUE_TYPES[kind]
        )
        body = json.dumps({"pad": "x" * 400}).encode()  # about an envelope's size
        exchange = channel.default_exchange
        try:

            async def publish(i: int) -> None:
                await exchange.publish(aio_pika.Message(body, delivery_mode=2), queue.name)

            found["publish_confirm"] = summary(await timed(samples, publish))
            await queue.purge()
            consumer = await connection.channel()
            got: asyncio.Queue[Any] = asyncio.Queue()
            consume_queue = await consumer.get_queue(queue.name)
            tag = await consume_queue.consume(got.put)

            async def round_trip(i: int) -> None:
                await publish(i)
                message = await got.get()
                await message.ack()

            found["round_trip"] = summary(await timed(samples, round_trip))
            await consume_queue.cancel(tag)
            await consumer.close()
            await queue.purge()
            started = time.perf_counter()
            confirms = [
                asyncio.ensure_future(
                    exchange.publish(aio_pika.Message(body, delivery_mode=2), queue.name)
                )
                for _ in range(messages)
            ]
            await asyncio.gather(*confirms)
            found["pipelined_per_s"] = round(messages / (time.perf_counter() - started))
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000, help="timed calls per piece")
    parser.add_argument("--messages", type=int, default=5000, help="pipelined publishes")
    parser.add_argument("--bulk-seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    result = {
        "postgres": asyncio.run(postgres_costs(args.samples, args.bulk_seconds, args.connections)),
        "rabbitmq": asyncio.run(rabbitmq_costs(args.samples, args.messages, "classic")),
        "rabbitmq_quorum": asyncio.run(rabbitmq_costs(args.samples, args.messages, "quorum")),
        "cores": os.cpu_count(),
    }
    if not args.json_only:
        for side in ("postgres", "rabbitmq", "rabbitmq_quorum"):
            for name, value in result[side].items():
                print(f"{side:<9} {name:<20} {value}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
