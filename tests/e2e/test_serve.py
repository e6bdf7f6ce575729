"""`cadre serve`: the API and the page on the local runtime, same paths as `func start`."""

from __future__ import annotations

from pathlib import Path

import httpx

from .conftest import Served, start_serve, wait_for


def test_serve_prints_its_url_serves_the_page_and_stops_on_ctrl_c(served: Served) -> None:
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and "<title>Cadre</title>" in page.text
    assert httpx.get(served.url + "/static/app.js").status_code == 200
    assert httpx.get(served.url + "/api/openapi.json").json()["info"]["title"] == "Cadre"
    code, out = served.stop()
    assert code == 0, out
    port = served.url.rsplit(":", 1)[1]
    assert f"http://localhost:{port}/" in out
    assert "cadre serve: stopped" in out
    assert "Traceback" not in out


def test_a_task_waiting_for_input_survives_a_restart_of_serve(tmp_path: Path) -> None:
    state = tmp_path / "cadre.db"
    first = start_serve(state)
    try:
        submitted = httpx.post(
            f"{first.url}/api/tasks", json={"team": "review", "task": "Write a haiku"}
        )
        assert submitted.status_code == 202
        task_id = submitted.json()["task_id"]
        wait_for(f"{first.url}/api/tasks/{task_id}", "awaiting_input")
    finally:
        assert first.stop()[0] == 0
    second = start_serve(state)
    try:
        url = f"{second.url}/api/tasks/{task_id}"
        assert httpx.post(f"{url}/input", json={"text": "APPROVE"}).status_code == 202
        task = wait_for(url, "completed")
        assert task["result"] == "APPROVE"
    finally:
        second.stop()


def test_serve_with_an_api_key_requires_it(tmp_path: Path) -> None:
    server = start_serve(tmp_path / "cadre.db", env={"CADRE_API_KEY": "k1"})
    try:
        assert httpx.get(f"{server.url}/api/teams").status_code == 401
        teams = httpx.get(f"{server.url}/api/teams", headers={"x-api-key": "k1"}).json()
        assert {"default", "selector", "swarm", "magentic", "nested", "review"} <= {
            t["name"] for t in teams
        }
    finally:
        _, out = server.stop()
    assert "API key   required" in out


def test_serve_on_a_taken_port_fails_with_a_message(served: Served) -> None:
    import subprocess
    import sys

    port = served.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cadre.cli",
            "serve",
            "--port",
            port,
            "--state",
            str(served.state.with_name("other.db")),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1
    assert f"could not listen on 127.0.0.1:{port}" in result.stderr
