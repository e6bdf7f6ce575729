"""The API over a real local runtime (SQLite file), called in-process through httpx."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from cadre import LocalRuntime, Registry
from cadre.api import Problem, create_app
from cadre.processing import RetryPolicy

FAST = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)


@dataclass
class Api:
    """An app over a started runtime, and a client that calls it in-process."""

    runtime: LocalRuntime
    client: httpx.AsyncClient
    registry: Registry
    app: Any

    async def idle(self) -> None:
        """Let the runtime handle everything queued."""
        await self.runtime.run_until_idle()

    async def submit(self, task: str = "Write a haiku", team: str = "review", **kw: Any) -> str:
        """Submit a task (must be accepted); its id."""
        response = await self.client.post("/api/tasks", json={"team": team, "task": task}, **kw)
        assert response.status_code == 202, response.text
        return str(response.json()["task_id"])

    async def task(self, task_id: str) -> dict[str, Any]:
        """GET the task (must exist)."""
        response = await self.client.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


def teams_registry() -> Registry:
    """A registry with the app's default team and the review team (it has a user proxy)."""
    from agents.team import team as default_team
    from tests.api.review_team import review

    registry = Registry()
    default_team.register(registry)
    review.register(registry)
    return registry


def assert_problem(response: httpx.Response, status: int, type_suffix: str | None = None) -> dict:  # type: ignore[type-arg]
    """The response is an RFC 9457 problem with `status` (and the given type)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    Problem.model_validate(body)
    assert body["status"] == status
    assert "Traceback" not in response.text
    if type_suffix:
        assert body["type"] == "urn:cadre:problem:" + type_suffix, body["type"]
    return dict(body)


@pytest.fixture
def app_options() -> dict[str, Any]:
    """Extra `create_app` options; override in a test module."""
    return {}


@pytest.fixture
async def api(tmp_path: Path, app_options: dict[str, Any]) -> AsyncIterator[Api]:
    registry = teams_registry()
    runtime = LocalRuntime.sqlite(tmp_path / "cadre.db", registry=registry, policy=FAST)
    async with runtime:
        options = {"poll_seconds": 0.01, **app_options}
        app = create_app(runtime, **options)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cadre.test") as client:
            yield Api(runtime, client, registry, app)


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    """`app` behind a real uvicorn server on a free port (streams are not buffered); its URL.

    The socket listens before the server starts, so clients can connect at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        sock.close()
