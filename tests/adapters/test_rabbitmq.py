"""RabbitMQ transport and worker quirks: routing, persistence, timers, retries in place.

The Transport + Consumer contract (tests/conformance/test_transport.py) runs over RabbitMQ
through `RabbitMQConsumer`; the worker consumes deliveries itself, and what it adds
(steps of several, local delivery, acknowledgements in runs, the relay) is tested here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from cadre.envelope import Envelope, new_id, utcnow
from cadre.errors import ConfigurationError
from cadre.ids import AgentId
from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, unavailable, worker_config
from tests.support.worker_app import Item, make_registry


def envelope(recipient: str, seq: int, **extra: object) -> Envelope:
    return Envelope(
        id=new_id(),
        message=Item.message_name,
        version=1,
        payload={"seq": seq},
        task_id="t1",
        recipient=recipient,
        created_at=utcnow(),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def rabbit() -> AsyncIterator[object]:
    try:
        from cadre.transports.rabbitmq import RabbitMQTransport

        transport = RabbitMQTransport(RABBITMQ_URL, name=f"t{uuid.uuid4().hex[:10]}", partitions=3)
        await transport.connect()
    except Exception as exc:
        unavailable(f"RabbitMQ: {exc}")
    yield transport
    await transport.delete_topology()
    await transport.close()


async def get_all(transport, queue_name: str, count: int, within: float = 5.0) -> list:  # type: ignore[no-untyped-def]
    """Up to `count` messages of a queue, acknowledged, through a consumer (a quorum queue
    with a single active consumer refuses basic.get)."""
    channel = await transport.connection.channel()
    await channel.set_qos(prefetch_count=max(1, count))
    queue = await channel.get_queue(queue_name)
    inbox: asyncio.Queue = asyncio.Queue()
    tag = await queue.consume(inbox.put)
    got = []
    deadline = time.monotonic() + within
    while len(got) < count and (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(inbox.get(), left)
        except TimeoutError:
            break
        await message.ack()
        got.append(message)
    await queue.cancel(tag)
    await channel.close()
    return got


def test_partitioning_is_stable_and_in_range() -> None:
    from cadre.transports.rabbitmq import partition_of

    parts = {partition_of(f"sink/{i}", 8) for i in range(200)}
    assert parts == set(range(8))
    assert partition_of("sink/a", 8) == 3  # CRC-32 of "a": the same in every process
    # a task's agents share its key, so they share a partition (nested teams too)
    task = {partition_of(a, 8) for a in ("cadre.team/t1", "writer/t1", "cadre.team/t1/inner")}
    assert len(task) == 1
    assert len({partition_of(f"writer/t{i}", 8) for i in range(50)}) == 8


def test_delay_buckets_never_deliver_early() -> None:
    from cadre.transports.rabbitmq import MAX_BUCKET_MS, delay_bucket

    assert delay_bucket(0.01) is None
    for seconds in (0.016, 0.3, 1.0, 7.5, 3600.0):
        bucket = delay_bucket(seconds)
        assert bucket is not None and bucket <= seconds * 1000 < 2 * bucket
    assert delay_bucket(10**7) == MAX_BUCKET_MS


async def test_reconnects_back_off_while_the_broker_stays_away(monkeypatch) -> None:
    """0.5 s after the connection is lost, then half the outage so far, at most 30 s; back
    to 0.5 s once connected (aio-pika's own robust connection waits a fixed interval)."""
    from yarl import URL

    from cadre.transports import rabbitmq

    assert [rabbitmq.reconnect_delay(t) for t in (0, 0.8, 3, 20, 61, 3600)] == [
        0.5, 0.5, 1.5, 10, 30, 30
    ]  # fmt: skip
    clock = [1000.0]
    from cadre.transports.rabbitmq import _connection

    monkeypatch.setattr(_connection.time, "monotonic", lambda: clock[0])
    connection = rabbitmq.backoff_connection()(URL(RABBITMQ_URL), reconnect_interval=0.5)
    waits = []
    for outage in (0, 4, 30, 200):  # not connected: the factory asks before each attempt
        clock[0] = 1000.0 + outage
        waits.append(connection.reconnect_interval)
    assert waits == [0.5, 2, 15, 30]
    connection.connected.set()
    assert connection.reconnect_interval == 0.5
    connection.connected.clear()  # a new outage starts from the first delay again
    clock[0] += 1
    assert connection.reconnect_interval == 0.5


async def test_the_transport_uses_the_backing_off_connection(rabbit) -> None:
    assert type(rabbit.connection).__name__ == "BackoffConnection"
    assert rabbit.connection.reconnect_interval == 0.5  # connected


def test_a_missing_aio_pika_names_the_extra(monkeypatch) -> None:
    from cadre.transports import rabbitmq

    monkeypatch.setitem(sys.modules, "aio_pika", None)
    with pytest.raises(ConfigurationError, match=r"\.\[workers\]"):
        rabbitmq.aio_pika()


async def test_messages_are_persistent_and_in_order_on_the_recipients_partition(rabbit) -> None:
    from cadre.transports.rabbitmq import partition_of, split_body

    sent = [envelope("sink/a", i) for i in range(20)]
    for one in sent:  # one send each: one AMQP message each, the envelope's own JSON
        await rabbit.send([one])
    queue = rabbit.queue_name(partition_of("sink/a", rabbit.partitions))
    got = await get_all(rabbit, queue, 20)
    assert [Envelope.from_bytes(m.body).id for m in got] == [e.id for e in sent]
    assert {(m.delivery_mode, m.content_type) for m in got} == {(2, "application/json")}
    assert [split_body(m.body, m.content_type) for m in got] == [[m.body] for m in got]


async def test_one_send_is_one_message_per_partition_in_order_in_batches_of_max_batch(
    rabbit,
) -> None:
    from cadre.transports.rabbitmq import BATCH_CONTENT_TYPE, MAX_BATCH, partition_of, split_body

    a, b = "sink/a", next(f"sink/{i}" for i in range(99) if partition_of(f"sink/{i}", 3) != 0)
    assert partition_of(a, 3) != partition_of(b, 3)
    sent = [envelope(a if i % 5 else b, i) for i in range(2 * MAX_BATCH + 50)]
    await rabbit.send(sent)
    for agent in (a, b):
        mine = [e.id for e in sent if e.recipient == agent]
        queue = rabbit.queue_name(partition_of(agent, rabbit.partitions))
        got = await get_all(rabbit, queue, -(-len(mine) // MAX_BATCH))
        assert {(m.delivery_mode, m.content_type) for m in got} == {(2, BATCH_CONTENT_TYPE)}
        lines = [line for m in got for line in split_body(m.body, m.content_type)]
        assert [Envelope.from_bytes(line).id for line in lines] == mine  # all, in send order
        sizes = [min(MAX_BATCH, len(mine) - k) for k in range(0, len(mine), MAX_BATCH)]
        assert [len(split_body(m.body, m.content_type)) for m in got] == sizes  # a: 100, 100; b: 50
        assert await get_all(rabbit, queue, 1, within=0.2) == []


async def test_sends_of_one_loop_iteration_share_one_message_per_partition_in_call_order(
    rabbit,
) -> None:
    """Sends made in one iteration of the event loop (a window of publishes in flight, a
    server's concurrent requests) go out together per partition; a later one on its own."""
    from cadre.transports.rabbitmq import BATCH_CONTENT_TYPE, partition_of, split_body

    a, b = "sink/a", next(f"sink/{i}" for i in range(99) if partition_of(f"sink/{i}", 3) != 0)
    sends = [[envelope(a, 10 * n + i) for i in range(3)] + [envelope(b, n)] for n in range(5)]
    await asyncio.gather(*(rabbit.send(one) for one in sends))  # all start in one iteration
    later = [envelope(a, 99)]
    await rabbit.send(later)
    for agent, count in ((a, 2), (b, 1)):
        queue = rabbit.queue_name(partition_of(agent, rabbit.partitions))
        got = await get_all(rabbit, queue, count)
        assert len(got) == count and got[0].content_type == BATCH_CONTENT_TYPE
        lines = [line for m in got for line in split_body(m.body, m.content_type)]
        mine = [e.id for one in [*sends, later] for e in one if e.recipient == agent]
        assert [Envelope.from_bytes(line).id for line in lines] == mine  # in call order
        assert await get_all(rabbit, queue, 1, within=0.2) == []
    assert len(split_body(got[0].body, got[0].content_type)) == 5  # b: one of each send


async def test_a_gathered_publish_fails_only_the_sends_it_carried() -> None:
    """`Outgoing`: a send's future ends when every message carrying its envelopes is
    confirmed (a send over MAX_BATCH spans two), and fails with the first refusal; a
    refused message fails the sends it carried and no other."""
    from cadre.transports.rabbitmq import MAX_BATCH
    from cadre.transports.rabbitmq._outgoing import Outgoing

    confirms: dict[str, asyncio.Future[None]] = {}
    published: list[tuple[str, int]] = []

    async def publish(queue: str, body: bytes, content_type: str) -> None:
        published.append((queue, body.count(b"\n") + 1))
        await confirms.setdefault(f"{queue}#{len(published)}", asyncio.Future())

    def items(n: int) -> list[tuple[Envelope, bytes]]:
        return [(envelope("sink/a", i), b"{}") for i in range(n)]

    outgoing = Outgoing(publish)
    big = outgoing.add("q1", items(MAX_BATCH + 1))  # messages 1 (100) and 2 (1 + small's 2)
    small = outgoing.add("q1", items(2))
    other = outgoing.add("q2", items(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert published == [("q1", MAX_BATCH), ("q1", 3), ("q2", 1)]
    confirms["q1#1"].set_result(None)
    await asyncio.sleep(0)
    assert not big.done()  # its second message is not confirmed yet
    confirms["q1#2"].set_exception(ConnectionError("channel closed"))
    confirms["q2#3"].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for refused in (big, small):
        with pytest.raises(ConnectionError):
            refused.result()
    assert other.result() is None


async def test_a_timer_goes_through_a_delay_bucket_and_arrives_when_due(rabbit) -> None:
    from cadre.transports.rabbitmq import partition_of

    due = datetime.now(UTC) + timedelta(seconds=0.4)
    await rabbit.send([envelope("sink/a", 1, not_before=due)])
    queue = rabbit.queue_name(partition_of("sink/a", rabbit.partitions))
    assert await get_all(rabbit, queue, 1, within=0.2) == []
    [message] = await get_all(rabbit, queue, 1, within=5)
    assert datetime.now(UTC) >= due - timedelta(seconds=0.2)  # bucket 256 ms, then re-routed
    assert Envelope.from_bytes(message.body).payload == {"seq": 1}


async def run_worker(rabbit, until, within: float = 20.0):  # type: ignore[no-untyped-def]
    from cadre.hosts.worker import Worker
    from cadre.processing import RetryPolicy

    config = worker_config(rabbit.name, rabbit.partitions, standby_delay=0.0)
    worker = Worker(
        config, registry=make_registry(), policy=RetryPolicy(max_attempts=3, base_delay=0.05)
    )
    await worker.store.migrate()  # type: ignore[attr-defined]
    task = asyncio.create_task(worker.run())
    try:
        deadline = time.monotonic() + within
        while not await until(worker.store) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return worker
    finally:
        from cadre.stores.postgres import PostgresStore

        worker.stop()
        await task
        cleanup = PostgresStore(POSTGRES_DSN, prefix=f"{rabbit.name}_")
        await cleanup.drop()
        await cleanup.close()


def same_partition(rabbit, agent: AgentId, prefix: str) -> AgentId:  # type: ignore[no-untyped-def]
    """A sink with another key (``<prefix><n>``) on `agent`'s partition."""
    from cadre.transports.rabbitmq import partition_of

    part = partition_of(str(agent), rabbit.partitions)
    return next(
        AgentId("sink", f"{prefix}{i}")
        for i in range(100)
        if partition_of(f"sink/{prefix}{i}", rabbit.partitions) == part
    )


def transcript_is(agent: AgentId, expected: list[int]):  # type: ignore[no-untyped-def]
    async def check(store) -> bool:  # type: ignore[no-untyped-def]
        record = await store.load(agent)
        return record.state is not None and json.loads(record.state)["got"] == expected

    return check


async def test_a_failing_step_is_retried_in_place_before_later_envelopes(rabbit) -> None:
    from cadre.hosts.worker import submit

    items = [Item(seq=0), Item(seq=1, flaky=True), Item(seq=2), Item(seq=3)]
    for item in items:
        await submit(rabbit, AgentId("splitter", "r"), item)
    check = transcript_is(AgentId("splitter", "r"), [0, 1, 2, 3])
    worker = await run_worker(rabbit, check)
    assert worker.handled >= 4
    from tests.support.worker_app import FAILED_ONCE

    assert 1 in FAILED_ONCE  # it did fail once, and still came before 2 and 3


async def test_a_worker_runs_a_timer_only_when_it_is_due(rabbit) -> None:
    due = datetime.now(UTC) + timedelta(seconds=0.6)
    env = envelope("sink/t", 7, not_before=due)
    await rabbit.send([env])
    seen_at: list[datetime] = []

    async def done(store) -> bool:  # type: ignore[no-untyped-def]
        if (await store.load(AgentId("sink", "t"))).state is None:
            return False
        seen_at.append(datetime.now(UTC))
        return True

    await run_worker(rabbit, done)
    assert seen_at and seen_at[0] >= due


async def test_a_message_of_many_envelopes_runs_each_once_in_order_and_dead_letters_a_bad_line(
    rabbit,
) -> None:
    import aio_pika

    from cadre.transports.rabbitmq import BATCH_CONTENT_TYPE, partition_of

    a = AgentId("sink", "a")
    part = partition_of(str(a), rabbit.partitions)
    b = same_partition(rabbit, a, "b")
    lines = [envelope(str(a), 0).to_bytes(), envelope(str(b), 10).to_bytes(), b"{not json"]
    lines += [envelope(str(agent), seq).to_bytes() for seq in (1, 2) for agent in (a, b)]
    channel = await rabbit.connection.channel()
    batch = aio_pika.Message(b"\n".join(lines), content_type=BATCH_CONTENT_TYPE, delivery_mode=2)
    await channel.default_exchange.publish(batch, rabbit.queue_name(part))
    letters: list = []

    async def done(store) -> bool:  # type: ignore[no-untyped-def]
        got = [await store.load(agent) for agent in (a, b)]
        letters[:] = await store.list_dead_letters()
        return [json.loads(r.state)["got"] if r.state else [] for r in got] == [
            [0, 1, 2],
            [10, 1, 2],
        ] and bool(letters)

    worker = await run_worker(rabbit, done)
    assert worker.handled == 1  # one message, acknowledged once for its five envelopes
    assert [(x.reason, x.body) for x in letters] == [("envelope_invalid", b"{not json")]
    [dlq] = await get_all(rabbit, rabbit.dlq_name, 1)
    assert (dlq.body, dlq.headers["x-cadre-reason"]) == (b"{not json", "envelope_invalid")
    queue = await channel.declare_queue(rabbit.queue_name(part), passive=True)
    assert queue.declaration_result.message_count == 0  # acknowledged, not redelivered
    await channel.close()


async def test_queued_messages_for_one_agent_run_as_steps_of_several_in_order(rabbit) -> None:
    """Messages already delivered for one agent run together (one load, one commit); a
    poison message among them sends its step's messages one by one: it alone is
    dead-lettered, and the order holds."""
    from cadre.hosts.worker import submit
    from tests.support.worker_app import SPLITTER_RUNS

    SPLITTER_RUNS.clear()
    splitter = AgentId("splitter", "many")
    seqs = [*range(20), -1, *range(20, 40)]
    for seq in seqs:
        await submit(rabbit, splitter, Item(seq=seq))
    letters: list = []
    agents = {"splitter": splitter, "a": AgentId("sink", "a"), "b": AgentId("sink", "b")}
    got: dict[str, list[int]] = {}

    async def done(store) -> bool:  # type: ignore[no-untyped-def]
        letters[:] = await store.list_dead_letters()
        for name, agent in agents.items():
            record = await store.load(agent)
            got[name] = json.loads(record.state)["got"] if record.state else []
        return bool(letters) and len(got["a"]) == 40 and len(got["b"]) == 40

    worker = await run_worker(rabbit, done)
    expected = list(range(40))
    assert got == {"splitter": expected, "a": expected, "b": [10 * n for n in expected]}
    assert worker.handled_together >= 10  # they came at once: many ran in steps of several
    # a failed step of several runs its handlers once more, no more: the poison one ran in
    # one (or none) and in its 3 attempts alone; the others at most twice
    assert SPLITTER_RUNS[-1] in (3, 4) and max(SPLITTER_RUNS[n] for n in expected) <= 2
    assert [(x.reason, json.loads(x.body)["payload"]["seq"]) for x in letters] == [
        ("handler_failed", -1)
    ]


async def test_the_messages_of_a_step_of_several_are_acknowledged_together(
    rabbit, monkeypatch
) -> None:
    """The deliveries a step of several took along end when that step ends, all at once,
    not each after the one before it has ended (one event-loop turn each): their acks go
    out as a few runs, not one frame per message."""
    import aiormq

    from cadre.hosts.worker import submit

    acks: list[int] = []
    basic_ack = aiormq.Channel.basic_ack

    def counting(self, delivery_tag, multiple=False, wait=True):  # type: ignore[no-untyped-def]
        acks.append(delivery_tag)
        return basic_ack(self, delivery_tag, multiple=multiple, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", counting)
    sink = AgentId("sink", "acks")
    for seq in range(60):
        await submit(rabbit, sink, Item(seq=seq))

    async def done(store) -> bool:  # type: ignore[no-untyped-def]
        record = await store.load(sink)
        return bool(record.state) and len(json.loads(record.state)["got"]) == 60

    worker = await run_worker(rabbit, done)
    assert worker.handled == 60 and worker.handled_together >= 30
    assert len(acks) <= 12, acks  # one message at a time would be about 60


async def test_agents_sharing_a_partition_run_concurrently_each_in_order(rabbit) -> None:
    from cadre.hosts.worker import submit

    slow = AgentId("sink", "slow")
    fast = same_partition(rabbit, slow, "f")
    for seq in range(3):
        await submit(rabbit, slow, Item(seq=seq, pause=0.4))
    for seq in range(10):
        await submit(rabbit, fast, Item(seq=seq))
    slow_when_fast_done: list[list[int]] = []

    async def both_done(store) -> bool:  # type: ignore[no-untyped-def]
        slow_got, fast_got = (
            json.loads(r.state)["got"] if r.state else []
            for r in (await store.load(slow), await store.load(fast))
        )
        if fast_got == list(range(10)) and not slow_when_fast_done:
            slow_when_fast_done.append(slow_got)
        return bool(slow_when_fast_done) and slow_got == [0, 1, 2]

    await run_worker(rabbit, both_done)
    # the fast agent finished behind the slow one's first step, not behind all three
    assert slow_when_fast_done and len(slow_when_fast_done[0]) < 3


class _Broker:
    """Stands in for RabbitMQ's publisher confirms only: each publish's confirm is a future
    the test resolves (the one thing a real broker cannot be made to do on cue)."""

    def __init__(self) -> None:
        self.published: list[tuple[Envelope, asyncio.Future[None]]] = []

    async def publish(self, envelopes):  # type: ignore[no-untyped-def]
        tasks = []
        for env in envelopes:
            confirm: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.published.append((env, confirm))
            tasks.append(asyncio.ensure_future(confirm))
        return tasks


async def test_unconfirmed_envelopes_stay_in_the_outbox_and_keep_their_order() -> None:
    from cadre.hosts._confirms import Confirms
    from cadre.stores.base import AgentRecord
    from cadre.stores.memory import MemoryStore

    store, broker = MemoryStore(), _Broker()
    confirms = Confirms(store, broker)  # type: ignore[arg-type]
    agent = AgentId("splitter", "x")
    first = envelope("sink/a", 1, sender=str(agent))
    second = envelope("sink/a", 2, sender=str(agent))
    etag = await confirms.store.save(AgentRecord(agent, outbox=(first,)), if_match=None)
    await confirms.transport.send([first])
    await confirms.store.clear_outbox(agent, etag)  # waits for the confirm
    assert (await store.load(agent)).outbox == (first,)
    assert (await confirms.store.load(agent)).outbox == ()  # the step does not republish it
    # the next step's save carries the unconfirmed envelope forward
    etag = await confirms.store.save(AgentRecord(agent, outbox=(second,)), if_match=etag)
    assert (await store.load(agent)).outbox == (first, second)
    await confirms.transport.send([second])
    await confirms.store.clear_outbox(agent, etag)
    broker.published[0][1].set_result(None)
    broker.published[1][1].set_exception(RuntimeError("nack"))
    await asyncio.sleep(0.01)
    with pytest.raises(Exception, match="did not confirm"):
        await confirms.settle([second])  # its message goes back to its queue
    await confirms.settle([first])
    # the failed one is no longer in flight: the agent's next step publishes it again; the
    # first, confirmed after the save that carried it, is still stored but is not republished
    assert (await store.load(agent)).outbox == (first, second)
    assert (await confirms.store.load(agent)).outbox == (second,)
    # a step that had loaded before the failure still carries it, and sends it first
    third = envelope("sink/a", 3, sender=str(agent))
    await confirms.store.save(AgentRecord(agent, outbox=(third,)), if_match=etag)
    assert (await store.load(agent)).outbox == (second, third)
    await confirms.transport.send([third])
    assert [env for env, _ in broker.published[2:]] == [second, third]
    for _, confirm in broker.published[2:]:
        confirm.set_result(None)
    await confirms.close()


async def test_a_local_delivery_is_confirmed_by_its_recipients_commit() -> None:
    """Not when the recipient's whole step has ended: the sender's next save, which may
    come first, must not carry it (carried envelopes made every row and step dearer)."""
    from cadre.hosts._confirms import HANDLING, Confirms
    from cadre.stores.base import AgentRecord
    from cadre.stores.memory import MemoryStore

    store = MemoryStore()
    step_ends: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Local:  # the recipient's task: its step commits, then ends when the test says
        def routes_here(self, env: Envelope) -> bool:
            return True

        def deliver(self, env: Envelope, gate: object = None) -> asyncio.Future[None]:
            return asyncio.ensure_future(asyncio.shield(step_ends))

    confirms = Confirms(store, _Broker(), Local())  # type: ignore[arg-type]

    sender = AgentId("splitter", "x")
    sent = envelope("sink/x", 1, sender=str(sender))
    etag = await confirms.store.save(AgentRecord(sender, outbox=(sent,)), if_match=None)
    await confirms.transport.send([sent])
    assert list(confirms.in_flight(str(sender))) == [sent.id]

    async def recipients_commit() -> None:
        HANDLING.set(sent)  # as the worker's local delivery task does
        await confirms.store.save(AgentRecord(AgentId("sink", "x"), state="{}"), if_match=None)

    await asyncio.create_task(recipients_commit())
    assert confirms.in_flight(str(sender)) == {}  # confirmed, though its task runs on
    await confirms.store.save(AgentRecord(sender, state="{}"), if_match=etag)
    assert (await store.load(sender)).outbox == ()  # the sender's next save carries nothing
    await confirms.settle([sent])
    step_ends.set_result(None)
    await confirms.close()


async def test_acks_go_in_runs_and_never_cover_a_gap() -> None:
    from cadre.transports.rabbitmq import AckRuns

    class Channel:  # records what would go to the broker
        def __init__(self) -> None:
            self.sent: list[tuple[int, bool]] = []

        async def basic_ack(self, tag: int, multiple: bool = False) -> None:
            self.sent.append((tag, multiple))

    class Delivery:
        def __init__(self, channel: Channel, tag: int) -> None:
            self.channel, self.delivery_tag = channel, tag

    channel, acks = Channel(), AckRuns()
    for tag in (1, 2, 3, 5):  # 4 is still running
        acks.ack(Delivery(channel, tag))
    await acks.wait()
    assert channel.sent == [(3, True), (5, False)]
    acks.settled_alone(Delivery(channel, 6))  # nacked
    acks.ack(Delivery(channel, 4))
    acks.ack(Delivery(channel, 7))
    await acks.wait()
    assert channel.sent[2:] == [(7, True)]  # 4..7: 5 and 6 were settled alone


async def test_many_local_conversations_run_each_message_once_and_leave_no_outbox(
    rabbit,
) -> None:
    """32 conversations at once inside one worker (server/<k> and a stateless echo/<k>
    that replies): no envelope is run twice (a confirm that lands after the next step's
    save must not make it visible again), and every stored outbox is cleared at the end,
    so the relay finds nothing to republish."""
    from cadre.hosts.worker import submit
    from tests.support.worker_app import Ball

    keys, until = [f"k{i}" for i in range(32)], 40
    for key in keys:
        await submit(rabbit, AgentId("server", key), Ball(seq=0, until=until))
    served: list[dict[str, list[int]]] = []

    async def all_done(store) -> bool:  # type: ignore[no-untyped-def]
        got = {}
        for key in keys:
            record = await store.load(AgentId("server", key))
            got[key] = json.loads(record.state or '{"got": []}')["got"]
        if sum(map(len, got.values())) < len(keys) * (until // 2 + 1):
            return False
        if await store.stale_outboxes(0.0):  # cleared a moment after the last step
            return False
        served.append(got)
        return True

    worker = await run_worker(rabbit, all_done, within=15)
    assert served, "the conversations did not finish, or outboxes were left behind"
    assert served[0] == {key: list(range(0, until + 1, 2)) for key in keys}
    assert worker.handled == len(keys)  # the first balls, from the broker
    assert worker.handled_local == len(keys) * until  # every other ball, once


async def test_the_relay_asks_for_left_and_lost_outboxes_not_for_ones_under_way() -> None:
    from cadre.hosts._confirms import Confirms
    from cadre.hosts._relay import OutboxRelay
    from cadre.stores.memory import MemoryStore

    broker = _Broker()
    confirms = Confirms(MemoryStore(), broker)  # type: ignore[arg-type]
    asked: list[str] = []

    class Flushes:  # what would go to the broker
        async def send(self, envelopes: list[Envelope]) -> None:
            assert {e.message for e in envelopes} == {"cadre.FlushOutbox"}
            asked.extend(str(e.recipient) for e in envelopes)

    relay = OutboxRelay(None, confirms, Flushes(), relay_after=5.0)
    under_way, lost, left = AgentId("left", "a"), AgentId("left", "b"), AgentId("left", "c")
    await confirms.publish([envelope("right/a", 1, sender=str(under_way))])
    await confirms.publish([envelope("right/b", 1, sender=str(lost))])
    broker.published[1][1].set_exception(RuntimeError("connection cut"))
    await asyncio.sleep(0.01)
    stored = [(agent, "7", ()) for agent in (under_way, lost, left)]

    async def stale(older_than: float) -> list[tuple[AgentId, str, tuple[Envelope, ...]]]:
        return stored

    assert await relay.relay_once(stale, 5.0) == 2
    assert asked == [str(lost), str(left)]  # in flight here: not left behind
    assert await relay.relay_once(stale, 5.0) == 0  # asked once per stored version
    stored[2] = (left, "8", ())
    assert await relay.relay_once(stale, 5.0) == 1
    assert asked == [str(lost), str(left), str(left)]
    broker.published[0][1].set_result(None)
    await confirms.close()


@pytest.mark.parametrize(("scan", "most", "least"), [(0.0, None, 12), (0.05, 3, 1)])
async def test_the_relay_spaces_its_passes_by_how_long_the_scan_took(
    scan: float, most: int | None, least: int
) -> None:
    """Every relay_after / 2 s when the store answers at once; at least RELAY_SPACING times
    a slow scan's duration apart (the store's query is a sequential scan)."""
    from cadre.hosts._relay import RELAY_SPACING
    from cadre.hosts.worker import Worker, WorkerConfig
    from cadre.stores.memory import MemoryStore

    store = MemoryStore()
    calls: list[float] = []

    async def stale_outboxes(older_than: float) -> list[tuple[AgentId, str, tuple]]:
        calls.append(older_than)
        await asyncio.sleep(scan)
        return []

    store.stale_outboxes = stale_outboxes  # type: ignore[attr-defined]
    worker = Worker(WorkerConfig(relay_after=0.1), store=store, registry=make_registry())
    relay = asyncio.create_task(worker.relay.run())
    await asyncio.sleep(1.2)
    relay.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await relay
    assert calls and set(calls) == {0.1}
    assert len(calls) >= least
    if most is not None:  # 20 x 0.05 s = 1 s (±20 %) between passes, not 0.05 s
        assert RELAY_SPACING * scan > 0.1 / 2 and len(calls) <= most
    await worker.confirms.close()
