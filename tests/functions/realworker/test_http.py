"""The HTTP API through the real worker's HTTP trigger and Cadre's ASGI bridge: requests as
the host encodes them, responses as the worker returns them."""

from __future__ import annotations

import pytest

from tests.functions.realworker.conftest import unique
from tests.support.functions_host.broker import ServiceBusBroker
from tests.support.functions_host.host import FunctionsHost

pytestmark = pytest.mark.timeout(60)


async def test_health_answers_200_through_the_asgi_bridge(functions_host: FunctionsHost) -> None:
    result = await functions_host.http("GET", "api/health")
    assert result.status == 200, result.body
    assert result.headers["content-type"] == "application/json"
    health = result.json()
    assert health["status"] == "ok" and health["checks"]["store"]["ok"] is True
    assert "ServiceBusTransport to 'cadre'" in health["checks"]["transport"]["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "api/tasks/never-submitted", None, 404),
        ("POST", "api/tasks", {"team": "no-such-team", "task": "x"}, 404),
        ("POST", "api/tasks", {"team": "default"}, 422),
        ("POST", "api/tasks", {"team": "default", "task": "x" * 20_001}, 413),
    ],
    ids=["unknown-task-404", "unknown-team-404", "no-task-422", "task-too-large-413"],
)
async def test_bad_requests_get_problem_details_through_the_bridge(
    functions_host: FunctionsHost,
    broker: ServiceBusBroker,
    method: str,
    path: str,
    body: object,
    status: int,
) -> None:
    result = await functions_host.http(method, path, body)
    assert result.invocation.succeeded  # the function answered; the status is the API's
    assert result.status == status, result.body
    assert result.headers["content-type"] == "application/problem+json"
    problem = result.json()
    assert problem["status"] == status and problem["title"]
    assert await broker.run() == 0  # nothing was sent


async def test_a_query_string_and_route_reach_the_api_as_the_host_sends_them(
    functions_host: FunctionsHost, broker: ServiceBusBroker
) -> None:
    accepted = await functions_host.http(
        "POST", "api/tasks", {"team": "default", "task": f"Plan {unique('day')}"}
    )
    assert accepted.status == 202, accepted.body
    task_id = accepted.json()["task_id"]
    assert accepted.headers["location"].endswith(f"/api/tasks/{task_id}")
    await broker.run()
    page = await functions_host.http("GET", f"api/tasks/{task_id}/messages?after=1&limit=2")
    assert page.status == 200, page.body
    messages = page.json()["messages"]
    assert len(messages) == 2 and messages[0]["source"] != "user"
