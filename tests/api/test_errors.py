"""Every error is an RFC 9457 problem with a clear detail; nothing a client sends is a 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cadre import LocalRuntime
from cadre.api import create_app
from cadre.errors import StoreError
from cadre.stores.memory import MemoryStore

from .conftest import Api, assert_problem, teams_registry


async def test_unknown_team_is_404_naming_the_known_ones(api: Api) -> None:
    response = await api.client.post("/api/tasks", json={"team": "nope", "task": "x"})
    body = assert_problem(response, 404, "team-not-found")
    assert body["detail"] == "no team 'nope' (known: default, review)"


async def test_unknown_task_is_404(api: Api) -> None:
    for method, path in [
        ("GET", "/api/tasks/0123abc"),
        ("GET", "/api/tasks/0123abc/messages"),
        ("POST", "/api/tasks/0123abc/cancel"),
    ]:
        response = await api.client.request(method, path)
        assert assert_problem(response, 404, "task-not-found")["detail"] == "no task '0123abc'"
    response = await api.client.post("/api/tasks/0123abc/input", json={"text": "hi"})
    assert_problem(response, 404, "task-not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"team": "review"}, "body.task"),
        ({"task": ""}, "body.task"),
        ({"task": 42}, "body.task"),
        ({"task": "x", "team": ""}, "body.team"),
        ({"task": "x", "colour": "red"}, "body.colour"),
        ({"task": "x", "options": {"temperature": 2}}, "body.options.temperature"),
        ([1, 2], "body"),
    ],
)
async def test_an_invalid_body_is_422_naming_the_field(api: Api, body: Any, field: str) -> None:
    response = await api.client.post("/api/tasks", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert field in [e["field"] for e in problem["errors"]], problem
    assert field in problem["detail"]


async def test_malformed_json_is_422(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks", content=b'{"task": ', headers={"content-type": "application/json"}
    )
    assert "JSON" in assert_problem(response, 422)["detail"]


async def test_a_body_that_is_not_utf8_is_422(api: Api) -> None:
    response = await api.client.post(
        "/api/tasks", content=b'{"task": "\xff"}', headers={"content-type": "application/json"}
    )
    assert assert_problem(response, 422, "invalid-request")["errors"][0]["field"] == "body"


async def test_bad_query_and_path_values_are_422(api: Api) -> None:
    task_id = await api.submit()
    response = await api.client.get(f"/api/tasks/{task_id}/messages?limit=0")
    assert "query.limit" in assert_problem(response, 422)["detail"]
    response = await api.client.get(f"/api/tasks/{task_id}/messages?after=-1")
    assert "query.after" in assert_problem(response, 422)["detail"]
    for odd in ("5.0", " 5", "+5", "1_0", "05", "\uff15"):  # pydantic alone would take most
        response = await api.client.get(f"/api/tasks/{task_id}/messages", params={"limit": odd})
        assert (
            "query.limit: Value error, must be a whole number"
            in assert_problem(response, 422)["detail"]
        )
    response = await api.client.get("/api/tasks/.hidden")
    assert "path.task_id" in assert_problem(response, 422)["detail"]
    response = await api.client.post(
        "/api/tasks", json={"task": "x"}, headers={"Idempotency-Key": ""}
    )
    assert "header.Idempotency-Key" in assert_problem(response, 422)["detail"]


@pytest.mark.parametrize("app_options", [{"max_task_chars": 100}])
async def test_text_over_the_limit_is_413(api: Api) -> None:
    response = await api.client.post("/api/tasks", json={"team": "review", "task": "x" * 101})
    body = assert_problem(response, 413, "text-too-large")
    assert body["detail"] == "body.task has 101 characters; the limit is 100 (CADRE_MAX_TASK_CHARS)"
    assert (await api.client.post("/api/tasks", json={"task": "x" * 100})).status_code == 202

    task_id = await api.submit()
    await api.idle()
    response = await api.client.post(f"/api/tasks/{task_id}/input", json={"text": "y" * 101})
    assert_problem(response, 413, "text-too-large")
    assert (await api.task(task_id))["status"] == "awaiting_input"  # nothing was sent


@pytest.mark.parametrize("app_options", [{"max_task_chars": 100}])
async def test_a_body_over_the_byte_limit_is_413_before_parsing(api: Api) -> None:
    big = b'{"task": "' + b"x" * 20_000 + b'"}'
    response = await api.client.post(
        "/api/tasks", content=big, headers={"content-type": "application/json"}
    )
    assert "bytes" in assert_problem(response, 413, "too-large")["detail"]

    async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: streamed
        for _ in range(20):
            yield b"x" * 1000

    response = await api.client.post("/api/tasks", content=chunks())
    assert_problem(response, 413, "too-large")


async def test_unknown_route_and_method_are_problems(api: Api) -> None:
    assert_problem(await api.client.get("/api/nothing-here"), 404, "not-found")
    assert_problem(await api.client.delete("/api/tasks"), 405, "method-not-allowed")


class BrokenStore(MemoryStore):
    """A store whose reads fail: a bug (RuntimeError) or an outage (StoreError)."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def load(self, agent_id):  # type: ignore[no-untyped-def]
        raise self.error


async def test_an_unexpected_error_is_a_bare_500_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = LocalRuntime(store=BrokenStore(RuntimeError("secret internals")))
    app = create_app(runtime, registry=teams_registry())
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.ERROR, logger="cadre.api"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/api/tasks/abc")
    body = assert_problem(response, 500, "internal")
    assert "secret" not in response.text and "RuntimeError" not in response.text
    assert body["detail"] == "the server failed to handle this request; it has been logged"
    assert "secret internals" in caplog.text  # the log has what the client does not


async def test_a_store_outage_is_503_with_retry_after(tmp_path: Path) -> None:
    runtime = LocalRuntime(store=BrokenStore(StoreError("database is locked")))
    app = create_app(runtime, registry=teams_registry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/api/tasks/abc")
        assert assert_problem(response, 503, "unavailable")["detail"].startswith("the store")
        assert response.headers["retry-after"] == "2"
        health = await client.get("/api/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"


UNSTORABLE = [
    ('"a\\u0000b"', "U+0000"),  # PostgreSQL holds no NUL
    ('"a\\ud800b"', "unicode"),  # JSON can spell a surrogate; UTF-8 cannot
]
TEXT_FIELDS = [
    ("/api/tasks", '{{"task": {}}}', "body.task"),
    ("/api/tasks", '{{"task": "x", "team": {}}}', "body.team"),
    ("/api/tasks/0123abc/input", '{{"text": {}}}', "body.text"),
    ("/api/tasks/0123abc/messages", '{{"text": {}}}', "body.text"),
    ("/api/tasks/0123abc/cancel", '{{"reason": {}}}', "body.reason"),
]


@pytest.mark.parametrize(("text", "message"), UNSTORABLE, ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(("path", "body", "field"), TEXT_FIELDS, ids=[f for *_, f in TEXT_FIELDS])
async def test_text_a_store_cannot_hold_is_422_naming_the_field(
    api: Api, path: str, body: str, field: str, text: str, message: str
) -> None:
    response = await api.client.post(
        path, content=body.format(text).encode(), headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert message in problem["detail"]


async def test_other_unicode_is_taken_and_read_back_exactly(api: Api) -> None:
    text = "tab\t bell\x07 del\x7f é 𝄞 \U0010ffff \ufeff"
    task_id = await api.submit(text)
    assert (await api.task(task_id))["task"] == text


@pytest.fixture
async def postgres_api(postgres_store) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """The API over a local runtime on a real PostgreSQL store."""
    rt = LocalRuntime(store=postgres_store, registry=teams_registry())
    async with rt:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://cadre.test") as client:
            yield client


async def test_on_postgresql_a_task_with_nul_is_422_not_a_503_to_retry_forever(
    postgres_api: httpx.AsyncClient,
) -> None:
    response = await postgres_api.post("/api/tasks", json={"task": "a\x00b"})
    assert_problem(response, 422, "invalid-request")
    assert "retry-after" not in response.headers


async def test_on_postgresql_the_first_request_after_the_connections_dropped_is_served(
    postgres_api: httpx.AsyncClient, postgres_store
) -> None:  # type: ignore[no-untyped-def]
    from tests.adapters.test_postgres import _terminate_backends

    response = await postgres_api.post("/api/tasks", json={"team": "review", "task": "x"})
    task_id = response.json()["task_id"]
    postgres_store._cache.clear()
    assert await _terminate_backends(postgres_store) >= 1
    assert (await postgres_api.get(f"/api/tasks/{task_id}")).status_code == 200
    assert (await postgres_api.get("/api/tasks/0123abc")).status_code == 404
