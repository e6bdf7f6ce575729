"""Start a local Node.js stand-in server (npm packages in node_modules/) for the tests, on
a free port, and stop it: what the Cosmos DB server and Azurite fixtures share."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class NodeProcess:
    """A running server process (the fixture's own child) and the port it listens on."""

    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        """Stop the process by its handle: terminate, then kill after 5 s."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_node(
    name: str, script: Path, args: Callable[[int], Sequence[str]], *, timeout: float = 20
) -> NodeProcess | str:
    """Run ``node script *args(port)`` and wait until it listens; a reason string (for a
    skip, or a failure in CI) when node or the package is missing or it does not start."""
    node = shutil.which("node")
    if node is None or not script.exists():
        return f"{name}: node or {script.relative_to(ROOT)} missing (npm ci)"
    port = free_port()
    process = subprocess.Popen(
        [node, str(script), *args(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = NodeProcess(process, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"{name} exited with code {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    return f"{name} did not listen within {timeout:.0f} s"
