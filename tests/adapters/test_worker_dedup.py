"""Exactly once through a worker however late a redelivery comes: the same envelope bytes
published again after many newer messages to the same agent (more than `seen` holds)."""

from __future__ import annotations

import json

from cadre.ids import AgentId
from tests.adapters.test_rabbitmq import envelope, rabbit, run_worker  # noqa: F401 (fixture)

NEWER = 1_000  # 15 evictions of `seen` (64 ids); tests/core/test_step.py goes to 10,000


async def test_a_redelivery_after_many_newer_messages_runs_once(rabbit) -> None:  # noqa: F811
    sink = AgentId("sink", "late")
    first = envelope(str(sink), 0)
    newer = [envelope(str(sink), seq) for seq in range(1, NEWER + 1)]
    await rabbit.send([first, *newer])
    await rabbit.send([first])  # the same id and bytes again, after all of them
    marker = envelope(str(sink), -1)
    await rabbit.send([marker])  # behind the redelivery on the same partition queue
    got: list[int] = []

    async def done(store) -> bool:  # type: ignore[no-untyped-def]
        record = await store.load(sink)
        got[:] = json.loads(record.state)["got"] if record.state else []
        return bool(got) and got[-1] == -1

    await run_worker(rabbit, done, within=60.0)
    assert got == [*range(NEWER + 1), -1]  # 0 once: the redelivery had no effect
