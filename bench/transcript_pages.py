"""Reading a long transcript: the first page, a middle page and the last page of a
100,000-entry transcript through the HTTP API, against the same reads of a 1,000-entry one.

A team's transcript is its manager's append-only log (``cadre.team/<task id>``), read by
message number. A page must cost the same whatever the transcript's length: this measures
`GET /api/tasks/{id}/messages?after=N&limit=100` in-process (httpx over ASGI, no network)
on the SQLite store (and on PostgreSQL with ``--postgres``), median of `--repeat` reads.

    python bench/transcript_pages.py [--entries 100000] [--repeat 30] [--postgres DSN]

The last line is one JSON object: milliseconds per page, per store and length, and
`page_growth` (the 100,000-entry transcript's slowest page ÷ the 1,000-entry one's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cadre import AgentId, LocalRuntime, Registry
from cadre.stores.base import AgentRecord, LogEntry, StateStore
from cadre.teams import Assistant, ChatMessage, RoundRobinTeam
from cadre.teams.manager import MANAGER_TYPE, TeamState

BATCH = 5_000


async def write_transcript(store: StateStore, task_id: str, entries: int) -> None:
    """A finished task of `entries` messages, written in steps of `BATCH` entries."""
    manager = AgentId(MANAGER_TYPE, task_id)
    stream, etag = str(manager), None
    for start in range(0, entries, BATCH):
        count = min(BATCH, entries - start)
        log = tuple(
            LogEntry(
                stream,
                seq,
                ChatMessage(
                    source="a" if seq % 2 else "b", content=f"message {seq} " + "x" * 150
                ).model_dump_json(exclude_defaults=True),
            )
            for seq in range(start, start + count)
        )
        state = TeamState(team="pages", status="completed", messages=start + count)
        etag = await store.save(
            AgentRecord(manager, state.model_dump_json(), 2, log=log), if_match=etag
        )
        await store.clear_outbox(manager, etag)
        etag = (await store.load(manager)).etag
    flush = getattr(store, "flush", None)
    if flush is not None:
        flush()


async def page_times(
    store: StateStore, task_id: str, entries: int, repeat: int
) -> dict[str, float]:
    import httpx

    from cadre.api import create_app

    registry = Registry()
    RoundRobinTeam("pages", [Assistant("a")]).register(registry)
    runtime = LocalRuntime(store=store, registry=registry)
    app = create_app(runtime, registry=registry)
    times: dict[str, float] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        for name, after in (("first", 0), ("middle", entries // 2), ("last", entries - 100)):
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = await client.get(f"/api/tasks/{task_id}/messages?after={after}")
                samples.append(time.perf_counter() - started)
                body = response.json()
                assert response.status_code == 200 and len(body["messages"]) == 100, body
                assert body["messages"][0]["index"] == after
            times[name] = round(statistics.median(samples) * 1000, 2)
    return times


async def measure(make_store: Any, entries: int, repeat: int) -> dict[str, dict[str, float]]:
    out = {}
    for n in (1_000, entries):
        store = await make_store()
        try:
            started = time.perf_counter()
            await write_transcript(store, f"pages-{n}", n)
            print(
                f"  wrote {n:,} entries in {time.perf_counter() - started:.1f} s", file=sys.stderr
            )
            out[str(n)] = await page_times(store, f"pages-{n}", n, repeat)
            print(f"  {n:>7,} entries: ms per page {out[str(n)]}", file=sys.stderr)
        finally:
            drop = getattr(store, "drop", None)
            if drop is not None:
                await drop()
            await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--postgres", metavar="DSN", help="also measure PostgreSQL at DSN")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cadre-pages-"))
    counter = iter(range(1_000))

    async def sqlite() -> StateStore:
        from cadre.stores.sqlite import SQLiteStore

        return SQLiteStore(folder / f"pages-{next(counter)}.db")

    async def postgres() -> StateStore:
        from cadre.stores.postgres import PostgresStore

        store = PostgresStore(args.postgres, prefix=f"bench_pages_{next(counter)}_")
        await store.migrate()
        return store

    result: dict[str, Any] = {}
    stores = [("sqlite", sqlite)] + ([("postgres", postgres)] if args.postgres else [])
    for name, make in stores:
        print(f"{name}:", file=sys.stderr)
        result[name] = asyncio.run(measure(make, args.entries, args.repeat))
    small, large = "1000", str(args.entries)
    result["page_growth"] = {
        name: round(max(times[large].values()) / max(times[small].values()), 2)
        for name, times in result.items()
    }
    print(
        json.dumps(
            {
                "ms_per_page": {k: v for k, v in result.items() if k != "page_growth"},
                "page_growth": result["page_growth"],
            }
        )
    )


if __name__ == "__main__":
    main()
