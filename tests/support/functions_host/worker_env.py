"""The Python that runs the real worker: Python 3.13 with `requirements.txt` (the app's pinned
packages, ``azure-functions-runtime`` among them) and the stand-in's gRPC packages, built by
``./scripts/test`` in ``.venv-functions313`` (``CADRE_FUNCTIONS_PYTHON`` names another)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_VENV = ROOT / ".venv-functions313"
PYTHON_VERSION = "3.13"
"""The Python the real-worker suite runs, and so the one infra/ deploys."""
STANDIN_REQUIREMENTS = Path(__file__).resolve().parent / "requirements-standin.txt"


def worker_python() -> Path:
    """Where the worker's interpreter is expected."""
    configured = os.environ.get("CADRE_FUNCTIONS_PYTHON")
    return Path(configured) if configured else DEFAULT_VENV / "bin" / "python"


def pinned(requirements: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """Package name (lower case) -> the version `requirements` pins with ``==``."""
    pins = {}
    for line in requirements.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def installed(python: Path) -> dict[str, str]:
    """Package name (lower case) -> version, as installed for `python`."""
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import json, importlib.metadata as m; print(json.dumps({"
            "d.metadata['Name'].lower().replace('_', '-'): d.version "
            "for d in m.distributions()}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return dict(json.loads(out.stdout))


def problem(python: Path) -> str | None:
    """Why `python` cannot run the real worker here, or None when it can."""
    if not python.exists():
        return (
            f"no Python {PYTHON_VERSION} for the real Functions worker at {python}: "
            "./scripts/test builds it (or set CADRE_FUNCTIONS_PYTHON)"
        )
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, azure_functions_runtime, grpc, google.protobuf; "
            "print('%d.%d' % sys.version_info[:2])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        return f"{python} cannot import the worker's packages: {check.stderr.strip()[-300:]}"
    if check.stdout.strip() != PYTHON_VERSION:
        return f"{python} is Python {check.stdout.strip()}, not {PYTHON_VERSION}"
    return None
