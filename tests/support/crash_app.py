"""An agent that kills its worker process, for the delivery-limit test
(tests/adapters/test_worker_quorum.py runs ``CADRE_APP=tests.support.crash_app cadre worker``
with ``CADRE_DELIVERY_LIMIT``).

`crasher/<k>` records every Blow's seq; a Blow with ``fatal`` ends the process at once
(``os._exit(3)``: no cleanup, no acknowledgement), as a segfault or an out-of-memory kill
would.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from cadre import Agent, Context, Message, handler


class Blow(Message, name="test.worker.Blow"):
    seq: int
    fatal: bool = False


class Record(BaseModel):
    got: list[int] = []


class Crasher(Agent, type="crasher"):
    State = Record

    @handler
    async def on_blow(self, msg: Blow, ctx: Context) -> None:
        if msg.fatal:
            os._exit(3)
        self.state.got.append(msg.seq)
