"""The transcript as server-sent events: in order, resumable, live until the task ends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cadre.api import create_app

from .conftest import Api, uvicorn_serving

SSE = {"Accept": "text/event-stream"}


def parse(text: str) -> list[dict[str, Any]]:
    """Events as dicts: event name, id, data (parsed JSON); comments as {"comment": ...}."""
    found = []
    for block in text.strip().split("\n\n"):
        event: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                event["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                event[name] = json.loads(value) if name == "data" else value
        found.append(event)
    return found


async def test_a_finished_tasks_stream_replays_every_message_then_ends(api: Api) -> None:
    task_id = await api.submit("Plan a trip", team="default")
    await api.idle()
    response = await api.client.get(f"/api/tasks/{task_id}/messages", headers=SSE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = parse(response.text)
    assert events[0] == {"retry": "2000"}
    messages = [e for e in events if e.get("event") == "message"]
    total = (await api.task(task_id))["messages"]
    assert [e["id"] for e in messages] == [str(i) for i in range(1, total + 1)]
    assert [e["data"]["index"] for e in messages] == list(range(total))
    assert messages[0]["data"]["content"] == "Plan a trip"
    assert events[-1]["event"] == "end"
    assert events[-1]["data"]["status"] == "completed"
    assert "APPROVE" in events[-1]["data"]["result"]


async def test_a_stream_resumes_after_last_event_id(api: Api) -> None:
    task_id = await api.submit("Plan a trip", team="default")
    await api.idle()
    response = await api.client.get(
        f"/api/tasks/{task_id}/messages", headers={**SSE, "Last-Event-ID": "5"}
    )
    ids = [e["id"] for e in parse(response.text) if e.get("event") == "message"]
    assert ids[0] == "6"
    after = await api.client.get(f"/api/tasks/{task_id}/messages?after=5", headers=SSE)
    assert [e.get("id") for e in parse(after.text)] == [e.get("id") for e in parse(response.text)]


@pytest.fixture
async def server(api: Api) -> AsyncIterator[str]:
    """The same app behind a real uvicorn server, with a short heartbeat."""
    app = create_app(api.runtime, registry=api.registry, poll_seconds=0.01, heartbeat_seconds=0.05)
    async with uvicorn_serving(app) as url:
        yield url


async def test_a_live_stream_shows_the_wait_for_input_and_the_end(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        submitted = await client.post("/api/tasks", json={"team": "review", "task": "A haiku"})
        task_id = submitted.json()["task_id"]
        seen: list[dict[str, Any]] = []
        buffer = ""
        async with client.stream("GET", f"/api/tasks/{task_id}/messages", headers=SSE) as stream:
            async for chunk in stream.aiter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    event = parse(block + "\n\n")[0]
                    seen.append(event)
                    waiting = event.get("data", {}).get("status") == "awaiting_input"
                    if event.get("event") == "status" and waiting:
                        answer = {"text": "APPROVE"}
                        await client.post(f"/api/tasks/{task_id}/input", json=answer)
    names = [e.get("event") or ("comment" if "comment" in e else "retry") for e in seen]
    assert names[-1] == "end" and seen[-1]["data"]["status"] == "completed"
    sources = [e["data"]["source"] for e in seen if e.get("event") == "message"]
    assert sources == ["user", "drafter", "human"]
    statuses = [e["data"]["status"] for e in seen if e.get("event") == "status"]
    assert "awaiting_input" in statuses
    prompts = [e["data"]["prompt"] for e in seen if e.get("event") == "status"]
    assert any(p and p.startswith("Approve the draft?") for p in prompts)


async def test_a_waiting_stream_sends_heartbeats(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        submitted = await client.post("/api/tasks", json={"team": "review", "task": "A haiku"})
        task_id = submitted.json()["task_id"]
        text = ""
        async with client.stream("GET", f"/api/tasks/{task_id}/messages", headers=SSE) as stream:
            async for chunk in stream.aiter_text():
                text += chunk
                if text.count(": keep-alive") >= 2:
                    break
        cancel = await client.post(f"/api/tasks/{task_id}/cancel")
        assert cancel.status_code == 202
        rest = await client.get(f"/api/tasks/{task_id}/messages?after=99", headers=SSE)
    assert "awaiting_input" in text
    assert parse(rest.text)[-1]["data"]["status"] == "cancelled"


async def test_a_stream_of_an_unknown_task_is_404(api: Api) -> None:
    response = await api.client.get("/api/tasks/abc/messages", headers=SSE)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_capped_stream_closes_without_end_and_resumes(api: Api) -> None:
    app = create_app(api.runtime, registry=api.registry, poll_seconds=0.01, stream_max_seconds=0.2)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        submitted = await client.post("/api/tasks", json={"team": "review", "task": "A haiku"})
        task_id = submitted.json()["task_id"]
        await api.idle()  # parked at the user proxy: the stream would not end by itself
        first = parse((await client.get(f"/api/tasks/{task_id}/messages", headers=SSE)).text)
        assert "end" not in [e.get("event") for e in first]
        last_id = [e["id"] for e in first if e.get("event") == "message"][-1]
        await client.post(f"/api/tasks/{task_id}/input", json={"text": "APPROVE"})
        await api.idle()
        resumed = await client.get(
            f"/api/tasks/{task_id}/messages", headers={**SSE, "Last-Event-ID": last_id}
        )
    events = parse(resumed.text)
    assert [e["data"]["source"] for e in events if e.get("event") == "message"] == ["human"]
    assert events[-1]["event"] == "end"


async def test_a_stream_stops_reading_the_store_when_the_client_hangs_up(api: Api) -> None:
    app = create_app(api.runtime, registry=api.registry, poll_seconds=0.01, heartbeat_seconds=0.02)
    service = app.state.cadre
    reads = 0
    read = service.state

    async def counting(task_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await read(task_id)

    service.state = counting
    async with uvicorn_serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        submitted = await client.post("/api/tasks", json={"team": "review", "task": "A haiku"})
        task_id = submitted.json()["task_id"]
        await api.idle()
        async with client.stream("GET", f"/api/tasks/{task_id}/messages", headers=SSE) as s:
            async for chunk in s.aiter_text():
                if "awaiting_input" in chunk:
                    break  # hang up on a task that would stream for days
        # The server notices the hang-up (http.disconnect, or a failed heartbeat write)
        # and the reads stop.
        counts = []
        for _ in range(50):
            counts.append(reads)
            await asyncio.sleep(0.1)
            if len(counts) >= 3 and counts[-1] == counts[-3]:
                break
        assert counts[-1] == counts[-3], counts  # no stream is polling any more
