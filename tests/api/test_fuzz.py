"""Property-based fuzz of the API against its own OpenAPI document (schemathesis): no
request yields a 5xx, and every response conforms to the documented schema, status and
content type. The app runs behind a real uvicorn server on the local runtime."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cadre import LocalRuntime
from cadre.api import create_app

from .conftest import FAST, Api, teams_registry, uvicorn_serving

MAX_EXAMPLES = int(os.environ.get("CADRE_FUZZ_EXAMPLES", "50"))
# Deterministic by default (the same cases every run, so CI does not flake); set
# CADRE_FUZZ_RANDOM=1 to explore new cases.
DERANDOMIZE = os.environ.get("CADRE_FUZZ_RANDOM", "") in ("", "0")


@contextlib.contextmanager
def running_server(path: Path, **options: Any) -> Iterator[str]:
    """The app on the local runtime, served by uvicorn in a thread with its own loop."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def main() -> None:
        async with LocalRuntime.sqlite(path, registry=teams_registry(), policy=FAST) as rt:
            app = create_app(rt, poll_seconds=0.01, **options)
            async with uvicorn_serving(app) as url:
                stop = asyncio.Event()
                found.update(url=url, stop=stop, loop=asyncio.get_running_loop())
                ready.set()
                await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(20), "the server did not start"
    try:
        yield str(found["url"])
    finally:
        found["loop"].call_soon_threadsafe(found["stop"].set)
        thread.join(20)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("fuzz") / "cadre.db") as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(server_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{server_url}/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_breaks_the_api(case: schemathesis.Case) -> None:
    case.call_and_validate(timeout=10)


@pytest.fixture(scope="module")
def keyed_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The app with an API key: requests without it must get documented 401 problems."""
    path = tmp_path_factory.mktemp("fuzz-key") / "cadre.db"
    with running_server(path, api_key="fuzz-key") as url:
        # the document needs the key; the requests made from it go without it
        yield schemathesis.openapi.from_url(
            f"{url}/api/openapi.json", headers={"x-api-key": "fuzz-key"}
        )


keyed = schemathesis.pytest.from_fixture("keyed_schema")


@keyed.parametrize()
@settings(
    max_examples=10,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_breaks_the_api_with_a_key(case: schemathesis.Case) -> None:
    case.call_and_validate(timeout=10)


# In-process, on the ASGI app: arbitrary header values (the OpenAPI document names only the
# headers it declares), paths and queries. Never a 5xx, always a response.
HEADER_NAMES = ["accept", "content-type", "idempotency-key", "last-event-id", "x-api-key",
                "content-length", "host", "range", "if-none-match", "x-forwarded-for"]  # fmt: skip
header_values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c not in b"\r\n\x00").strip()  # what HTTP can carry
)
segments = st.text(st.characters(codec="utf-8"), max_size=12).map(
    lambda s: urllib.parse.quote(s, safe="")
)
ROUTES = [
    "/api/tasks", "/api/teams", "/api/health", "/api/dead-letters", "/", "/api/openapi.json",
    "/static/index.html",
]  # fmt: skip
paths = st.one_of(
    st.sampled_from(ROUTES),
    segments.map(lambda s: f"/api/tasks/{s}"),
    segments.map(lambda s: f"/api/tasks/{s}/messages"),
    segments.map(lambda s: f"/api/dead-letters/{s}/redrive"),
    segments.map(lambda s: f"/static/{s}"),
)


@settings(
    max_examples=MAX_EXAMPLES * 2,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
    path=paths,
    query=st.dictionaries(st.sampled_from(["after", "limit", "x"]), segments, max_size=2),
    headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=4),
    body=st.one_of(st.none(), st.binary(max_size=60), st.just(b'{"task": "x"}')),
)
async def test_no_header_path_or_query_breaks_the_api(
    api: Api,
    method: str,
    path: str,
    query: dict[str, str],
    headers: list[tuple[str, bytes]],
    body: bytes | None,
) -> None:
    url = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    headers = [(n, v) for n, v in headers if n not in ("content-length", "host")]
    response = await api.client.request(
        method, url, headers=[(n.encode(), v) for n, v in headers], content=body, timeout=10
    )
    assert response.status_code < 500, (response.status_code, response.text)
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        assert method == "HEAD" or response.json()["status"] == response.status_code
