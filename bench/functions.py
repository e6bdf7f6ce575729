"""Functions cold start: what the worker pays to list the functions, against its floor.

Every figure is the median of N fresh interpreters (``python -c``, cwd = the repo), the
cases interleaved run by run so that a busy moment on the machine hits all of them alike:

  floor          import cadre; import azure.functions  (the least any Cadre app on Functions pays)
  function_app   import function_app  (index from cadre-functions.json: the app is not imported)
  no_index       import function_app of a copy whose index cannot be read or written (the
                 fallback: the app is imported to read the registry)
  first_message  import function_app, then build the runtime and the HTTP app as the first
                 invocation does (agents, step, Service Bus and Cosmos SDKs, FastAPI)

    python bench/functions.py [--runs 15]

The last line is one JSON object; ``ratio`` is function_app / floor (the issue's bound: 1.5).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMED = "import time; t = time.perf_counter(); {body}; print(time.perf_counter() - t)"
FIRST_MESSAGE = (
    "import function_app; "
    "from cadre.hosts.functions import FunctionsRuntime, use_runtime, http_app; "
    "from cadre.settings import Settings; "
    "use_runtime(FunctionsRuntime.from_settings(Settings.from_env())); "
    "http_app(); "
    "import azure.servicebus.aio, azure.cosmos.aio"
)
ENV = {
    "CADRE_COSMOS_ENDPOINT": "https://bench.documents.azure.com:443/",
    "CADRE_COSMOS_KEY": "YmVuY2g=",
    "ServiceBusConnection": "Endpoint=sb://bench.servicebus.windows.net/;"
    "SharedAccessKeyName=k;SharedAccessKey=v",
}


def sample(body: str, cwd: Path) -> float:
    """Seconds `body` takes in one fresh interpreter."""
    env = {**os.environ, **ENV}
    out = subprocess.run(
        [sys.executable, "-c", TIMED.format(body=body)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"{body!r} failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder)
        shutil.copy(ROOT / "function_app.py", copy / "function_app.py")
        (copy / "cadre-functions.json").mkdir()  # unreadable and unwritable: the fallback
        os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        cases = {
            "floor": ("import cadre; import azure.functions", ROOT),
            "function_app": ("import function_app", ROOT),
            "no_index": ("import function_app", copy),
            "first_message": (FIRST_MESSAGE, ROOT),
        }
        for body, cwd in cases.values():  # warm the bytecode caches
            sample(body, cwd)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):  # interleaved: a busy moment hits every case alike
            for name, (body, cwd) in cases.items():
                samples[name].append(sample(body, cwd))
    results = {name: statistics.median(values) for name, values in samples.items()}
    floor = results["floor"]
    for name, seconds in results.items():
        print(f"{name:<14} {seconds * 1000:7.1f} ms   {seconds / floor:5.2f} x floor")
    summary: dict[str, float] = {name: round(sec * 1000, 1) for name, sec in results.items()}
    summary["ratio"] = round(results["function_app"] / floor, 2)
    summary["ratio_no_index"] = round(results["no_index"] / floor, 2)
    summary["runs"] = args.runs
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
