"""Health, dead letters and the API key."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from cadre import AgentId, LocalRuntime
from cadre.api import create_app
from cadre.teams import HumanInput

from .conftest import Api, assert_problem, teams_registry


async def test_health_checks_the_store_and_the_transport(api: Api) -> None:
    response = await api.client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["store"] == {"ok": True, "detail": "SQLiteStore answered a read"}
    assert body["checks"]["transport"]["ok"] is True


class WithHealth(LocalRuntime):
    """A runtime with its own checks (as the Functions host has)."""

    result: Any = None

    async def health(self) -> dict[str, Any]:
        if isinstance(self.result, Exception):
            raise self.result
        return dict(self.result)


@pytest.mark.parametrize(
    ("result", "status", "checks"),
    [
        (
            {"store": {"ok": True, "detail": "cosmos"}, "transport": True},
            200,
            {"store", "transport"},
        ),
        (
            {"store": {"ok": True, "detail": "x"}, "transport": {"ok": False, "detail": "down"}},
            503,
            {"store", "transport"},
        ),
        (ConnectionError("no route"), 503, {"runtime"}),
    ],
)
async def test_health_reports_the_runtimes_own_checks(
    result: Any, status: int, checks: set[str]
) -> None:
    runtime = WithHealth()
    runtime.result = result
    transport = httpx.ASGITransport(app=create_app(runtime, registry=teams_registry()))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/api/health")
    assert response.status_code == status
    assert set(response.json()["checks"]) == checks
    assert response.json()["status"] == ("ok" if status == 200 else "degraded")


async def dead_letter(api: Api) -> str:
    """Make one: input for an agent type nobody registered is dead-lettered at once."""
    await api.runtime.send(AgentId("nobody", "k"), HumanInput(text="hello"))
    await api.idle()
    [letter] = await api.runtime.store.list_dead_letters()
    return letter.id


async def test_dead_letters_are_listed_and_redriven(api: Api) -> None:
    letter_id = await dead_letter(api)
    response = await api.client.get("/api/dead-letters")
    assert response.status_code == 200
    [letter] = response.json()
    assert (letter["id"], letter["reason"], letter["agent"]) == (
        letter_id,
        "unknown_agent_type",
        "nobody/k",
    )
    assert letter["message"] == "cadre.team.HumanInput"
    assert letter["body"]["payload"] == {"text": "hello"}

    response = await api.client.post(f"/api/dead-letters/{letter_id}/redrive")
    assert response.status_code == 202
    assert response.json() == {"id": letter_id, "envelope_id": letter_id, "agent": "nobody/k"}
    assert await api.runtime.store.list_dead_letters() == []
    await api.idle()  # still nobody to handle it: dead-lettered again, nothing lost
    assert [d.id for d in await api.runtime.store.list_dead_letters()] == [letter_id]


async def test_redriving_an_unknown_dead_letter_is_404(api: Api) -> None:
    response = await api.client.post("/api/dead-letters/abc123/redrive")
    assert_problem(response, 404, "dead-letter-not-found")


@pytest.mark.parametrize("app_options", [{"admin": False}])
async def test_admin_routes_can_be_left_out(api: Api) -> None:
    assert_problem(await api.client.get("/api/dead-letters"), 404)
    assert_problem(await api.client.post("/api/dead-letters/x/redrive"), 404)


@pytest.mark.parametrize("app_options", [{"api_key": "s3cret"}])
async def test_with_a_key_every_route_but_health_needs_it(api: Api) -> None:
    for method, path in [
        ("GET", "/api/teams"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/abc"),
        ("GET", "/api/dead-letters"),
        ("POST", "/api/dead-letters/abc/redrive"),
        ("GET", "/api/openapi.json"),  # it lists the admin routes
    ]:
        missing = await api.client.request(method, path)
        assert "x-api-key" in assert_problem(missing, 401, "unauthorized")["detail"]
        wrong = await api.client.request(method, path, headers={"x-api-key": "guess"})
        assert assert_problem(wrong, 401)["detail"] == "wrong API key"
    assert (await api.client.get("/api/health")).status_code == 200
    key = {"x-api-key": "s3cret"}
    assert (await api.client.get("/api/dead-letters", headers=key)).status_code == 200
    task_id = await api.submit(headers=key)
    assert (await api.client.get(f"/api/tasks/{task_id}", headers=key)).status_code == 200


@pytest.mark.parametrize("app_options", [{"api_key": "s3cret"}])
async def test_the_openapi_document_declares_the_key(api: Api) -> None:
    spec = (await api.client.get("/api/openapi.json", headers={"x-api-key": "s3cret"})).json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "x-api-key"
    assert "401" in spec["paths"]["/api/tasks"]["post"]["responses"]
    problem = spec["paths"]["/api/tasks"]["post"]["responses"]["404"]["content"]
    assert problem == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert {"Problem", "FieldError"} <= spec["components"]["schemas"].keys()
    [limit] = spec["paths"]["/api/dead-letters"]["get"]["parameters"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 1000)


async def test_any_stored_bytes_are_listed_and_an_unreadable_letter_is_not_redriven(
    api: Api,
) -> None:
    """A body nested deeper than any parser goes, or not JSON at all, is shown as text (a
    huge one shortened, said so); redriving it is a 409 naming why, never a 500."""
    from datetime import UTC, datetime

    from cadre.stores.base import DeadLetter

    deep = b"[" * 100_000 + b"]" * 100_000
    for letter_id, body in (("deep", deep), ("binary", b"\xff\xfe not json")):
        await api.runtime.store.add_dead_letter(
            DeadLetter(letter_id, body, "envelope_invalid", "bad", datetime.now(UTC))
        )
    listed = await api.client.get("/api/dead-letters")
    assert listed.status_code == 200
    shown = {d["id"]: d["body"] for d in listed.json()}
    assert shown["deep"].startswith("[[[[") and "134,464 more characters]" in shown["deep"]
    assert shown["binary"].endswith(" not json")
    for letter_id in ("deep", "binary"):
        response = await api.client.post(f"/api/dead-letters/{letter_id}/redrive")
        detail = assert_problem(response, 409, "dead-letter-not-redrivable")["detail"]
        assert "(envelope_invalid)" in detail
    assert len(await api.runtime.store.list_dead_letters()) == 2  # kept: nothing lost


@pytest.mark.parametrize("event_id", ["1" * 4_301, "²", "-1", "1.5", " 7"])
async def test_a_bad_last_event_id_is_a_422_never_a_500(api: Api, event_id: str) -> None:
    task_id = await api.submit(team="default")
    await api.idle()
    response = await api.client.get(
        f"/api/tasks/{task_id}/messages",
        headers={"Accept": "text/event-stream", "Last-Event-ID": event_id.encode()},
    )
    assert "Last-Event-ID" in assert_problem(response, 422, "invalid-request")["detail"]


async def test_every_html_response_carries_the_pages_security_headers(api: Api) -> None:
    for path in ("/", "/static/index.html"):
        response = await api.client.get(path)
        assert response.status_code == 200 and response.text.startswith("<!doctype html>")
        assert "default-src 'self'" in response.headers["content-security-policy"], path
    script = await api.client.get("/static/app.js")
    assert "content-security-policy" not in script.headers  # not HTML: nothing to protect


async def test_there_is_no_docs_browser_to_load_from_a_cdn(api: Api) -> None:
    assert_problem(await api.client.get("/api/docs"), 404)
    page = (await api.client.get("/")).text
    assert 'href="api/openapi.json"' in page and "api/docs" not in page


@pytest.mark.parametrize("key", ["clé", "two words ", " lead", "tab\tkey", "emoji🔑"])
def test_a_key_no_client_can_send_is_refused_when_the_app_is_made(key: str) -> None:
    from cadre import LocalRuntime
    from cadre.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="printable ASCII"):
        create_app(LocalRuntime(), api_key=key)


async def test_head_works_on_every_get_route_without_a_body(api: Api) -> None:
    task_id = await api.submit()
    await api.idle()
    spec = (await api.client.get("/api/openapi.json")).json()
    gets = [p for p, ops in spec["paths"].items() if "get" in ops]
    paths = [p.replace("{task_id}", task_id) for p in gets]
    paths += ["/", "/static/index.html", "/static/app.js", "/api/openapi.json"]
    assert "/api/health" in paths and f"/api/tasks/{task_id}/messages" in paths
    for path in paths:
        get, head = await api.client.get(path), await api.client.head(path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == get.headers["content-type"], path
    stream = await api.client.head(
        f"/api/tasks/{task_id}/messages", headers={"Accept": "text/event-stream"}
    )
    assert (stream.status_code, stream.content) == (200, b"")
    assert stream.headers["content-type"].startswith("text/event-stream")
    missing = await api.client.head("/api/tasks/0123abc")
    assert (missing.status_code, missing.content) == (404, b"")
    assert missing.headers["content-type"] == "application/problem+json"
