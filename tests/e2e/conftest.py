"""`cadre serve` as a real subprocess, on a free port, with the app's teams (agents/)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = "agents"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A running `cadre serve`."""

    process: subprocess.Popen[str]
    url: str
    state: Path

    def stop(self) -> tuple[int, str]:
        """Ctrl-C it; its exit code and everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            out, _ = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        return self.process.returncode, out


def start_serve(state: Path, *extra: str, env: dict[str, str] | None = None) -> Served:
    """Start `cadre serve` and wait until its health route answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cadre.cli",
            "serve",
            "--port",
            str(port),
            "--state",
            str(state),
            "--app",
            APP,
            *extra,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.communicate()[0]
            raise AssertionError(f"cadre serve exited {process.returncode}:\n{out}")
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return Served(process, url, state)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"cadre serve did not answer: {process.communicate()[0]}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = start_serve(tmp_path / "cadre.db")
    yield server
    server.stop()


def wait_for(url: str, status: str, timeout: float = 20, poll: float = 0.05) -> dict[str, Any]:
    """Poll ``GET url`` (a task) until its status is `status`; fail with the task if it is
    not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        task = httpx.get(url, timeout=5).json()
        if task["status"] == status or time.monotonic() > deadline:
            assert task["status"] == status, task
            return dict(task)
        time.sleep(poll)
