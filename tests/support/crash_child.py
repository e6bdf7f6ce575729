"""A child process for the kill -9 test: queue work on a SQLite runtime, then run it."""

from __future__ import annotations

import asyncio
import sys

from cadre import AgentId, LocalRuntime
from tests.support.contracts import Add, make_registry


async def main(path: str, count: int) -> None:
    rt = LocalRuntime.sqlite(path, registry=make_registry())
    await rt.transport.start()
    for amount in range(1, count + 1):
        await rt.send(
            AgentId("counter", "a"), Add(amount=amount), reply_to=AgentId("recorder", "a")
        )
    print("sent", flush=True)
    await rt.start()
    await rt.run_until_idle()
    print("done", flush=True)
    await asyncio.sleep(3600)  # wait to be killed


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
