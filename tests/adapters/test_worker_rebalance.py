"""Rebalancing: a worker that joins takes its share of the partitions, and one that leaves
hands its share on, without a restart of the others and with every agent's messages in
order. In-process workers (asyncio), real RabbitMQ and PostgreSQL; each test has its own
queue names and tables and drops them afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cadre import Agent, AgentId, Context, Registry, handler
from cadre.transports.rabbitmq import partition_of
from tests.conftest import worker_config, workers_backend
from tests.support.worker_app import Ball, Item, Transcript, make_registry

PARTITIONS = 8


def new_worker(name: str, registry: Registry) -> Any:
    """An in-process worker on this test's queues and tables."""
    from cadre.hosts.worker import Worker

    return Worker(config(name), registry=registry)


def config(name: str, **overrides: Any) -> Any:
    return worker_config(name, PARTITIONS, **{"concurrency": 8, **overrides})


async def until(check: Callable[[], bool], within: float, what: str) -> float:
    """Wait for `check()`; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def one_key_per_partition(prefix: str) -> list[str]:
    keys: dict[int, str] = {}
    for i in range(1000):
        keys.setdefault(partition_of(f"x/{prefix}{i}", PARTITIONS), f"{prefix}{i}")
    return [keys[p] for p in range(PARTITIONS)]


def holds_its_share(workers: list[Any]) -> bool:
    """Every worker is the active consumer of exactly the partitions assigned to it, and all
    agree on the assignment."""
    owners = [w.rebalancer.owners() for w in workers]
    if any(o != owners[0] for o in owners) or len(owners[0]) != PARTITIONS:
        return False
    ids = {w.membership.me.id: w for w in workers}
    if not ids.keys() >= set(owners[0].values()):  # a worker that left, not yet heard leaving
        return False
    return all(
        w.transport.owns(p) == (ids[owners[0][p]] is w) for p in range(PARTITIONS) for w in workers
    )


async def test_a_worker_that_joins_takes_its_share_from_the_running_one() -> None:
    """One worker holds every partition; a second joins and within seconds each is the
    active consumer of its share, the first never restarted; a client's stream to one
    agent per partition arrives complete and in order throughout."""
    from cadre.hosts.worker import submit

    async with workers_backend(PARTITIONS, letter="r") as (name, store, transport):
        sinks = [AgentId("sink", key) for key in one_key_per_partition("s")]
        sent = 0
        streaming = True

        async def stream() -> None:
            nonlocal sent
            while streaming:
                for sink in sinks:
                    await submit(transport, sink, Item(seq=sent))
                sent += 1
                await asyncio.sleep(0.05)

        first = new_worker(name, make_registry())
        tasks = [asyncio.create_task(first.run())]
        client = asyncio.create_task(stream())
        try:
            await until(
                lambda: all(first.transport.owns(p) for p in range(PARTITIONS)), 15, "first all"
            )
            member = first.membership.me.id
            second = new_worker(name, make_registry())
            tasks.append(asyncio.create_task(second.run()))
            took = await until(lambda: holds_its_share([first, second]), 15, "shares held")
            print(f"\na joining worker held its share {took:.2f} s after its start")
            assert not tasks[0].done() and first.membership.me.id == member
            mine, theirs = first.assigned_partitions(), second.assigned_partitions()
            assert len(mine) == len(theirs) == PARTITIONS // 2
            assert first.rebalancer.released >= len(theirs)
            assert second.rebalancer.released <= len(mine)  # it never was active there
            await asyncio.sleep(0.5)  # the stream goes on to the new owner
        finally:
            streaming = False
            await client
            for worker in (first, *([second] if len(tasks) > 1 else [])):
                worker.stop()
            await asyncio.gather(*tasks)
        for sink in sinks:
            assert await transcript(store, sink, within=10, count=sent) == list(range(sent))
        assert second.handled > 0


async def transcript(store: Any, agent: AgentId, *, within: float, count: int) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        record = await store.load(agent)
        got = Transcript.model_validate_json(record.state).got if record.state else []
        if len(got) >= count or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


class Crosser(Agent):
    """`ping/a<k>` and `pong/b<k>`: keys in (most likely) different partitions, so every
    hop goes through the broker; each records the seq of every ball it gets."""

    State = Transcript
    partner: str = ""

    @handler
    async def on_ball(self, msg: Ball, ctx: Context) -> None:
        await asyncio.sleep(msg.pause)
        self.state.got.append(msg.seq)
        if msg.seq + 1 < msg.until:
            key = ("b" if self.id.key[0] == "a" else "a") + self.id.key[1:]
            ctx.send(AgentId(self.partner, key), msg.model_copy(update={"seq": msg.seq + 1}))


class Ping(Crosser):
    partner = "pong"


class Pong(Crosser):
    partner = "ping"


def registry() -> Registry:
    reg = make_registry()
    reg.register(Ping, type="ping")
    reg.register(Pong, type="pong")
    return reg


async def test_conversations_stay_in_order_while_a_worker_joins_and_another_leaves() -> None:
    """Sixteen conversations (eight by local delivery within a partition, eight across
    partitions through the broker) and a client's stream to one agent per partition, on two
    workers; a third joins mid-run, and one of the first two stops gracefully mid-run. Every
    conversation completes; every agent got its messages in order, none missing, none
    twice; partitions moved both times."""
    from cadre.hosts.worker import submit

    until_seq, pause = 400, 0.02
    async with workers_backend(PARTITIONS, letter="r") as (name, store, transport):
        rallies = one_key_per_partition("r")
        crossings = [str(k) for k in range(8)]
        workers = [new_worker(name, registry()) for _ in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await until(lambda: all(w.consuming for w in workers), 10, "consuming")
            await asyncio.sleep(2.0)  # the two have settled their shares
            sinks = [AgentId("sink", key) for key in one_key_per_partition("s")]
            streamed = 0
            streaming = True

            async def stream() -> None:  # queues of messages per agent: their order matters
                nonlocal streamed
                while streaming:
                    for sink in sinks:
                        await submit(transport, sink, Item(seq=streamed, pause=0.01))
                    streamed += 1
                    # well below what a sink takes (10 ms an item): a faster client grows the
                    # partition queues for as long as it runs, and the balls queue behind it
                    await asyncio.sleep(0.05)

            client = asyncio.create_task(stream())
            ball = Ball(seq=0, until=until_seq, pause=pause)
            for key in rallies:
                await submit(transport, AgentId("left", key), ball)
            for key in crossings:
                await submit(transport, AgentId("ping", f"a{key}"), ball)
            agents = [AgentId(t, k) for k in rallies for t in ("left", "right")]
            agents += [
                AgentId(t, f"{p}{k}") for k in crossings for t, p in (("ping", "a"), ("pong", "b"))
            ]

            async def progress() -> int:
                return sum([len(await transcript(store, a, within=0, count=0)) for a in agents])

            total = len(agents) * until_seq // 2
            for _ in range(300):
                if await progress() >= total // 5:
                    break
                await asyncio.sleep(0.1)
            before_join = sum(w.rebalancer.handed for w in workers)
            third = new_worker(name, registry())
            workers.append(third)
            tasks.append(asyncio.create_task(third.run()))
            joined = await until(lambda: holds_its_share(workers), 20, "the third holds its share")
            for worker in workers:  # a release counts once its channel has closed, which
                await worker.rebalancer.close()  # can be after the next consumer took over
            moved_on_join = sum(w.rebalancer.handed for w in workers) - before_join
            done_at_join = await progress()
            assert done_at_join < total, "the run ended before the join was complete"
            leaver = workers[1]
            leaver.stop()
            started = time.monotonic()
            await tasks[1]
            stayed = [workers[0], third]
            left = await until(lambda: holds_its_share(stayed), 20, "the two hold the shares")
            left += time.monotonic() - started - left
            done_at_leave = await progress()
            print(
                f"\njoin: shares held {joined:.2f} s after the start, {moved_on_join} "
                f"releases, {done_at_join}/{total} balls; leave: {left:.2f} s, "
                f"{done_at_leave}/{total} balls"
            )
            assert done_at_leave < total, "the run ended before the leave"
            for key in rallies:
                left_got = await transcript(
                    store, AgentId("left", key), within=40, count=until_seq // 2
                )
                right_got = await transcript(
                    store, AgentId("right", key), within=5, count=until_seq // 2
                )
                assert left_got == list(range(0, until_seq, 2)), key
                assert right_got == list(range(1, until_seq, 2)), key
            for key in crossings:
                ping = await transcript(
                    store, AgentId("ping", f"a{key}"), within=40, count=until_seq // 2
                )
                pong = await transcript(
                    store, AgentId("pong", f"b{key}"), within=5, count=until_seq // 2
                )
                assert ping == list(range(0, until_seq, 2)), key
                assert pong == list(range(1, until_seq, 2)), key
            streaming = False
            await client
            for sink in sinks:
                got = await transcript(store, sink, within=20, count=streamed)
                assert got == list(range(streamed)), sink
            assert moved_on_join >= 1
            assert third.handled + third.handled_local > 0
            assert leaver.handled + leaver.handled_local > 0
        finally:
            streaming = False
            for worker in workers:
                worker.stop()
            await asyncio.gather(*tasks)
