"""A worker's gauges: the lag of each partition queue (and whether this worker consumes
it), the steps in flight and the timers waiting, recorded every few seconds."""

from __future__ import annotations

import asyncio
import time

from cadre.ids import AgentId
from cadre.telemetry import PARTITION, PARTITION_ACTIVE, QUEUE_DEPTH, STEPS_IN_FLIGHT
from tests.conftest import worker_config, workers_backend
from tests.observability.conftest import Otel
from tests.support.worker_app import Item, make_registry


async def test_a_worker_records_each_partitions_lag_and_its_steps_in_flight(otel: Otel) -> None:
    from cadre.hosts.worker import Worker, submit
    from cadre.transports.rabbitmq import partition_of

    async with workers_backend(partitions=2, letter="g") as (name, _store, transport):
        other = next(
            AgentId("sink", f"o{i}") for i in range(50) if not partition_of(f"sink/o{i}", 2)
        )
        for seq in range(3):
            await submit(transport, other, Item(seq=seq))
        config = worker_config(
            name,
            2,
            worker_index=1,
            worker_count=2,
            standby_delay=60.0,  # partition 0 stays unconsumed: its 3 messages wait
        )
        worker = Worker(config, registry=make_registry())
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 10
            while not otel.metric_points(QUEUE_DEPTH):
                assert time.monotonic() < deadline, "no queue depth recorded"
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await task
        depths = {
            a[PARTITION]: (v, a[PARTITION_ACTIVE]) for a, v in otel.metric_points(QUEUE_DEPTH)
        }
        assert depths[0] == (3, False)
        assert otel.metric_points(STEPS_IN_FLIGHT) == [({}, 0)]
