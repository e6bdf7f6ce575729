"""Azurite (npm ``azurite``), the Azure Storage emulator, for the tests: the blob service on
a free port, in memory, without telemetry (which would reach for the internet)."""

from __future__ import annotations

from tests.support.node_process import ROOT, NodeProcess, start_node

BLOB_MAIN = ROOT / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"

Azurite = NodeProcess
"""A running Azurite blob service (`port`, `stop()`)."""


def start_azurite() -> Azurite | str:
    """Start the blob service; a reason string when it cannot run here."""
    return start_node(
        "Azurite",
        BLOB_MAIN,
        lambda port: [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",  # SDKs newer than Azurite 3.35 use newer API versions
            "--silent",
        ],
    )
