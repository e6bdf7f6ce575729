"""The worker's probe endpoint (``health_port``): liveness, readiness through start, work
and a graceful stop, and the lag per partition."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from cadre.ids import AgentId
from tests.conftest import worker_config, workers_backend
from tests.support.worker_app import Item, make_registry


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_probes_say_ready_while_consuming_and_show_each_partitions_lag() -> None:
    """A worker with half of two partitions (the other's standby far off): ready once it
    consumes; /status counts the messages waiting in the partition nobody consumes and
    names the one it is the active consumer of; not ready while it drains on stop; gone
    after."""
    from cadre.hosts.worker import Worker, submit
    from cadre.transports.rabbitmq import partition_of

    async with workers_backend(partitions=2, letter="h") as (name, store, transport):
        mine = next(AgentId("sink", f"m{i}") for i in range(50) if partition_of(f"sink/m{i}", 2))
        other = next(
            AgentId("sink", f"o{i}") for i in range(50) if not partition_of(f"sink/o{i}", 2)
        )
        config = worker_config(
            name,
            2,
            worker_index=1,
            worker_count=2,
            standby_delay=60.0,  # partition 0 stays unconsumed
            health_port=0,
            health_host="127.0.0.1",
        )
        worker = Worker(config, registry=make_registry())
        for seq in range(5):
            await submit(transport, other, Item(seq=seq))
        task = asyncio.create_task(worker.run())
        async with httpx.AsyncClient(timeout=5) as http:

            async def get(path: str) -> httpx.Response:
                return await http.get(f"http://127.0.0.1:{worker.health_port}{path}")

            async def listening() -> bool:
                return worker.health_port is not None

            await until(listening)
            assert (await get("/livez")).status_code == 200

            async def ready() -> bool:
                return (await get("/readyz")).status_code == 200

            await until(ready)
            await submit(transport, mine, Item(seq=0))

            async def handled() -> bool:
                return worker.handled == 1

            await until(handled)
            status = (await get("/status")).json()
            assert status["partitions"] == {
                "0": {"active": False, "ready": 5},  # the lag of the unconsumed partition
                "1": {"active": True, "ready": 0},
            }
            assert (status["ready"], status["handled"], status["in_flight"]) == (True, 1, 0)
            assert (await get("/nowhere")).status_code == 404

            await submit(transport, mine, Item(seq=1, pause=1.0))  # still running at the stop

            async def busy() -> bool:
                return worker.chains.in_flight == 1

            await until(busy)
            worker.stop()
            answer = await get("/readyz")
            assert (answer.status_code, answer.json()) == (503, {"ready": False, "why": "stopping"})
            await task
            with pytest.raises(httpx.ConnectError):  # the endpoint went with the worker
                await get("/livez")
        record = await store.load(mine)
        assert record.state is not None and '"got":[0,1]' in record.state.replace(" ", "")
