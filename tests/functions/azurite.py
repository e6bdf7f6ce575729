"""Azurite (npm ``azurite``), the Azure Storage emulator, for the tests: the blob service on
a free port, in memory, without telemetry (which would reach for the internet)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOB_MAIN = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"


@dataclass
class Azurite:
    """A running Azurite blob service (this fixture's own child process)."""

    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_azurite() -> Azurite | str:
    """Start the blob service; a reason string when it cannot run here."""
    node = shutil.which("node")
    if node is None or not BLOB_MAIN.exists():
        return "Azurite: node or node_modules/azurite missing (npm ci)"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen(
        [
            node,
            str(BLOB_MAIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",  # SDKs newer than Azurite 3.35 use newer API versions
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"Azurite exited with code {process.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return Azurite(process, port)
        except OSError:
            time.sleep(0.1)
    Azurite(process, port).stop()
    return "Azurite did not listen within 20 s"
