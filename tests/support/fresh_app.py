"""Run the `cadre` CLI as a new user would: in a fresh folder holding a copy of this app
(`agents/`, `messages/`), with no ``CADRE_*`` or ``OTEL_*`` setting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cadre_in_fresh_folder(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cadre.cli ARGS`` in `folder` (the app copied in), output captured."""
    for name in ("agents", "messages"):
        shutil.copytree(REPO / name, folder / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CADRE_", "OTEL_"))}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "cadre.cli", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
