"""Agents and a child-process entry for the worker fault tests.

    python -m tests.support.worker_app      # a worker configured by CADRE_* variables

The workflow: `splitter/<k>` records every Item and forwards it to `sink/a` (as is) and
`sink/b` (seq * 10); each agent's state lists what it received, in order: the transcript.
An Item with ``seq < 0`` always fails (a poison message).

The rally: `left/<k>` and `right/<k>` (one key, so one partition: a worker owning it runs
their exchange without the broker) pass a Ball back and forth, each recording its seq, until
seq reaches ``until``: left/<k> ends with the even seqs, right/<k> with the odd ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from typing import ClassVar

from pydantic import BaseModel

from cadre import Agent, AgentId, Context, Message, Registry, handler
from cadre.processing import RetryPolicy


class Item(Message, name="test.worker.Item"):
    seq: int
    pause: float = 0.0
    flaky: bool = False


FAILED_ONCE: set[int] = set()
"""Flaky items that already failed once (in this process)."""

SPLITTER_RUNS: Counter[int] = Counter()
"""How often the splitter's handler ran for each seq (in this process)."""


class Transcript(BaseModel):
    got: list[int] = []


class Splitter(Agent):
    State = Transcript

    @handler
    async def on_item(self, msg: Item, ctx: Context) -> None:
        SPLITTER_RUNS[msg.seq] += 1
        if msg.seq < 0:
            raise RuntimeError(f"poison item {msg.seq}")
        if msg.flaky and msg.seq not in FAILED_ONCE:
            FAILED_ONCE.add(msg.seq)
            raise RuntimeError(f"flaky item {msg.seq} fails once")
        await asyncio.sleep(msg.pause)
        self.state.got.append(msg.seq)
        ctx.send(AgentId("sink", "a"), Item(seq=msg.seq))
        ctx.send(AgentId("sink", "b"), Item(seq=msg.seq * 10))


class Sink(Agent):
    State = Transcript

    @handler
    async def on_item(self, msg: Item, ctx: Context) -> None:
        await asyncio.sleep(msg.pause)
        self.state.got.append(msg.seq)


class Ball(Message, name="test.worker.Ball"):
    seq: int
    until: int
    pause: float = 0.0


class Player(Agent):
    State = Transcript
    other: ClassVar[str] = ""

    @handler
    async def on_ball(self, msg: Ball, ctx: Context) -> None:
        await asyncio.sleep(msg.pause)
        self.state.got.append(msg.seq)
        if msg.seq + 1 < msg.until:
            ctx.send(AgentId(self.other, self.id.key), msg.model_copy(update={"seq": msg.seq + 1}))


class Left(Player):
    other = "right"


class Right(Player):
    other = "left"


class Server(Player):
    """Serves to a stateless `echo/<k>`, which returns every ball with the next seq."""

    other = "echo"


class Echo(Agent):
    @handler
    async def on_ball(self, msg: Ball, ctx: Context) -> Ball:
        return msg.model_copy(update={"seq": msg.seq + 1})


def make_registry() -> Registry:
    registry = Registry()
    registry.register(Splitter, type="splitter")
    registry.register(Sink, type="sink")
    registry.register(Left, type="left")
    registry.register(Right, type="right")
    registry.register(Server, type="server")
    registry.register(Echo, type="echo")
    return registry


def main() -> None:
    from cadre.hosts.worker import Worker, config_from_settings
    from cadre.settings import Settings

    logging.basicConfig(level=os.environ.get("CADRE_TEST_LOG", "WARNING"))
    settings = Settings.from_env()
    policy = RetryPolicy(max_attempts=2, base_delay=0.05, max_delay=0.2)
    worker = Worker(config_from_settings(settings), registry=make_registry(), policy=policy)
    asyncio.run(worker.run())


if __name__ == "__main__":
    main()
