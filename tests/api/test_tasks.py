"""Submitting, reading, answering and cancelling tasks over HTTP, on the local runtime."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from cadre import LocalRuntime
from cadre.api import create_app
from cadre.errors import TransportError

from .conftest import FAST, Api, assert_problem, teams_registry


async def test_submit_answers_202_with_location_and_the_task_completes(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks", json={"team": "default", "task": "Plan a three-day trip to Lisbon"}
    )
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == body["status_url"] == f"/api/tasks/{body['task_id']}"
    assert body["messages_url"] == f"/api/tasks/{body['task_id']}/messages"
    await api.idle()

    task = await api.task(body["task_id"])
    assert task["status"] == "completed"
    assert task["team"] == "default"
    assert task["task"] == "Plan a three-day trip to Lisbon"
    assert "APPROVE" in task["result"]
    assert task["error"] is None and task["stop_reason"] == "critic mentioned 'APPROVE'"
    assert set(task["usage_by_agent"]) == {"planner", "writer", "critic"}
    assert all(u["prompt_tokens"] > 0 for u in task["usage_by_agent"].values())
    total = sum(
        u["prompt_tokens"] + u["completion_tokens"] for u in task["usage_by_agent"].values()
    )
    assert total == task["usage"]["prompt_tokens"] + task["usage"]["completion_tokens"]
    stamps = [
        datetime.fromisoformat(task[k]) for k in ("submitted_at", "started_at", "finished_at")
    ]
    assert stamps == sorted(stamps)


async def test_a_task_reads_queued_before_its_first_step_and_can_be_cancelled(api: Api) -> None:
    await api.runtime.stop()  # nothing is handled until the runtime starts again
    task_id = await api.submit()
    task = await api.task(task_id)
    assert (task["status"], task["team"], task["task"]) == ("queued", "review", "Write a haiku")
    assert task["submitted_at"] is not None and task["started_at"] is None

    response = await api.client.post(f"/api/tasks/{task_id}/cancel")
    assert response.status_code == 202
    await api.runtime.start()
    await api.idle()
    task = await api.task(task_id)
    assert task["status"] == "cancelled"
    assert task["stop_reason"] == "cancelled by the client"


async def test_a_user_proxy_parks_the_task_until_input_arrives(api: Api) -> None:
    task_id = await api.submit("Write a haiku about rain")
    await api.idle()
    task = await api.task(task_id)
    assert (task["status"], task["speaker"]) == ("awaiting_input", "human")
    assert task["prompt"].startswith("Approve the draft?")

    response = await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "APPROVE"})
    assert response.status_code == 202
    assert response.json()["task_id"] == task_id
    await api.idle()
    task = await api.task(task_id)
    assert task["status"] == "completed"
    assert task["result"] == "APPROVE"
    page = (await api.client.get(f"/api/tasks/{task_id}/messages")).json()
    assert [m["source"] for m in page["messages"]] == ["user", "drafter", "human"]


async def test_input_is_409_unless_the_task_awaits_it(api: Api) -> None:
    await api.runtime.stop()
    task_id = await api.submit()
    queued = await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "hi"})
    assert "is queued" in assert_problem(queued, 409, "task-state-conflict")["detail"]
    await api.runtime.start()
    await api.idle()
    await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "APPROVE"})
    await api.idle()
    done = await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "again"})
    assert "is completed" in assert_problem(done, 409)["detail"]


async def test_cancel_stops_a_waiting_task_and_a_finished_task_is_409(api: Api) -> None:
    task_id = await api.submit()
    await api.idle()
    assert (await api.task(task_id))["status"] == "awaiting_input"
    response = await api.client.post(
        f"/api/tasks/{task_id}/cancel", json={"reason": "changed my mind"}
    )
    assert response.status_code == 202
    await api.idle()
    task = await api.task(task_id)
    assert (task["status"], task["stop_reason"]) == ("cancelled", "changed my mind")

    again = await api.client.post(f"/api/tasks/{task_id}/cancel")
    assert "is cancelled" in assert_problem(again, 409, "task-state-conflict")["detail"]
    late_input = await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "x"})
    assert_problem(late_input, 409)


async def test_messages_are_paged_with_after_and_limit(api: Api) -> None:
    task_id = await api.submit("Plan a trip", team="default")
    await api.idle()
    total = (await api.task(task_id))["messages"]
    assert total > 4
    first = (await api.client.get(f"/api/tasks/{task_id}/messages?limit=3")).json()
    assert [m["index"] for m in first["messages"]] == [0, 1, 2]
    assert (first["next_after"], first["has_more"], first["status"]) == (3, True, "completed")
    rest = (await api.client.get(f"/api/tasks/{task_id}/messages?after=3&limit=500")).json()
    assert [m["index"] for m in rest["messages"]] == list(range(3, total))
    assert (rest["next_after"], rest["has_more"]) == (total, False)
    assert first["messages"][0] == {
        **first["messages"][0],
        "source": "user",
        "content": "Plan a trip",
        "kind": "text",
        "tokens": 0,
    }
    tokens = [m["tokens"] for m in rest["messages"] if m["source"] == "writer"]
    assert tokens and all(t > 0 for t in tokens)
    beyond = (await api.client.get(f"/api/tasks/{task_id}/messages?after=999")).json()
    assert (beyond["messages"], beyond["next_after"], beyond["has_more"]) == ([], 999, False)


async def test_same_idempotency_key_and_body_returns_the_same_task(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    body = {"team": "review", "task": "Write a limerick"}
    first = await api.client.post("/api/tasks", json=body, headers=headers)
    await api.idle()
    again = await api.client.post("/api/tasks", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["status"] == "awaiting_input"  # the task as it is now
    await api.idle()
    page = (await api.client.get(f"{first.headers['location']}/messages")).json()
    assert [m["source"] for m in page["messages"]] == ["user", "drafter"]  # started once


async def test_same_idempotency_key_with_another_body_is_409(api: Api) -> None:
    headers = {"Idempotency-Key": "order-43"}
    await api.client.post("/api/tasks", json={"team": "review", "task": "A"}, headers=headers)
    other = await api.client.post(
        "/api/tasks", json={"team": "review", "task": "B"}, headers=headers
    )
    assert "different request" in assert_problem(other, 409, "idempotency-key-reused")["detail"]
    fresh = await api.client.post(
        "/api/tasks", json={"team": "review", "task": "B"}, headers={"Idempotency-Key": "o-44"}
    )
    assert fresh.status_code == 202


async def test_idempotency_survives_a_restart(tmp_path: Path) -> None:
    registry, path = teams_registry(), tmp_path / "cadre.db"
    headers = {"Idempotency-Key": "nightly-report-2026-11-25"}
    body = {"team": "review", "task": "Summarise the night"}
    ids = []
    for _ in range(2):  # two server lifetimes on one state file
        async with LocalRuntime.sqlite(path, registry=registry, policy=FAST) as runtime:
            transport = httpx.ASGITransport(app=create_app(runtime))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.post("/api/tasks", json=body, headers=headers)
                assert response.status_code == 202
                ids.append(response.json()["task_id"])
                await runtime.run_until_idle()
                page = (await client.get(f"/api/tasks/{ids[-1]}/messages")).json()
                assert [m["source"] for m in page["messages"]] == ["user", "drafter"]
    assert ids[0] == ids[1]


async def test_teams_lists_every_team_with_its_participants(api: Api) -> None:
    response = await api.client.get("/api/teams")
    assert response.status_code == 200
    teams = {t["name"]: t for t in response.json()}
    assert set(teams) == {"default", "review"}
    assert teams["default"]["pattern"] == "round_robin"
    assert [(p["name"], p["kind"]) for p in teams["review"]["participants"]] == [
        ("drafter", "assistant"),
        ("human", "user_proxy"),
    ]
    assert teams["review"]["description"] == "a drafter writes, a human approves"


class FlakySend(LocalRuntime):
    """A runtime whose transport fails the first send (a broker outage)."""

    failures = 1

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise TransportError("broker unreachable")
        return await super().send(*args, **kwargs)


async def test_a_submit_that_could_not_be_sent_is_503_and_its_retry_starts_the_task(
    tmp_path: Path,
) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    body = {"team": "review", "task": "Write a haiku"}
    runtime = FlakySend(registry=teams_registry())
    async with runtime:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            failed = await client.post("/api/tasks", json=body, headers=headers)
            assert_problem(failed, 503, "unavailable")
            retried = await client.post("/api/tasks", json=body, headers=headers)
            assert retried.status_code == 202
            await runtime.run_until_idle()
            task = (await client.get(retried.headers["location"])).json()
    assert task["status"] == "awaiting_input"


async def test_a_finished_task_continues_with_the_users_message(api: Api) -> None:
    task_id = await api.submit()  # the review team: the drafter, then the human
    await api.idle()
    waiting = await api.client.post(f"/api/tasks/{task_id}/messages", json={"text": "more"})
    assert "is awaiting_input" in assert_problem(waiting, 409, "task-state-conflict")["detail"]
    await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "APPROVE"})
    await api.idle()
    assert (await api.task(task_id))["status"] == "completed"

    response = await api.client.post(
        f"/api/tasks/{task_id}/messages", json={"text": "Now one about the mountains"}
    )
    assert response.status_code == 202 and response.json()["task_id"] == task_id
    await api.idle()
    task = await api.task(task_id)
    assert (task["status"], task["messages"]) == ("awaiting_input", 5)  # asked again
    page = (await api.client.get(f"/api/tasks/{task_id}/messages?after=3")).json()
    assert [(m["source"], m["content"][:9]) for m in page["messages"]] == [
        ("user", "Now one a"),
        ("drafter", "[offline]"),
    ]
    cancel = await api.client.post(f"/api/tasks/{task_id}/cancel")
    assert cancel.status_code == 202
    await api.idle()
    again = await api.client.post(f"/api/tasks/{task_id}/messages")  # no text: go on as it was
    assert again.status_code == 202
    await api.idle()
    assert (await api.task(task_id))["status"] == "awaiting_input"


async def test_continuing_refuses_what_it_cannot_take(api: Api) -> None:
    missing = await api.client.post("/api/tasks/nope/messages", json={"text": "x"})
    assert_problem(missing, 404)
    task_id = await api.submit(team="default")
    await api.idle()
    empty = await api.client.post(f"/api/tasks/{task_id}/messages", json={"text": ""})
    assert_problem(empty, 422)
    unknown = await api.client.post(f"/api/tasks/{task_id}/messages", json={"txt": "x"})
    assert_problem(unknown, 422)
    huge = await api.client.post(f"/api/tasks/{task_id}/messages", json={"text": "x" * 30_000})
    assert_problem(huge, 413)
    allowed = await api.client.request("DELETE", f"/api/tasks/{task_id}/messages")
    assert allowed.headers["allow"] == "GET, HEAD, POST"
