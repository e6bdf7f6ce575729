"""A queueing model of team tasks on `cadre worker`s, driven by measured per-step costs:
the simulation docs/scaling.md sizes a deployment with, and checks against a real run.

What is simulated (a discrete-event simulation, one event queue):
  - tasks arrive (Poisson at `--rate` tasks/s, or all at once with `--burst N`); a task is
    `--turns` model turns of a round-robin team: the task message, then per turn a manager
    step and an assistant step that waits `--model` s for the model inside the step, as
    Cadre's Assistant does (2 x turns + 1 steps, the last manager step ends the task);
  - a task's key picks one of `--partitions` partitions (uniformly, as CRC-32 of random
    task ids does), a partition belongs to one of `--workers` workers (p % workers);
  - a worker is one Python process: one CPU server (FIFO) that every step needs for
    `step_cpu_ms` (load, handler, encode: the worker's CPU per task / steps per task,
    measured by bench/scale_run.py), at most `--concurrency` steps under way at once;
  - a model call waits for one of `--model-slots` slots of the worker's limiter
    (CADRE_MODEL_MAX_CONCURRENT; 0: none, as the benchmark's model has none);
  - each worker group-commits: a save joins the commit under way's successor; a commit of
    n rows takes `commit_ms + n * row_ms` (bench/step_costs.py: `upsert` p50 and
    `batch32_per_row_us`); a step ends when its commit does;
  - PostgreSQL's and the broker's CPU per task are added up to the cores they need.
It reports the tasks/s (tasks ending in the second half of the arrival window per second:
the arrival rate when it keeps up, its capacity when not; a burst: tasks / wall), each worker's
CPU utilisation over that window, commits/s and rows per commit, task duration p50/p99,
the peaks of steps under way and model calls in flight per worker, and `drain_s`, how long
after the last arrival the last task ended (a stable system: about one task's duration).

    python bench/scale_model.py                      # docs/scaling.md's plan: 10,000 tasks
                                                     # a minute, 4 workers, model 3 s
    python bench/scale_model.py --workers 3 --model 10 --seconds 400 --concurrency 8192
    python bench/scale_model.py --check run.json                  # a bench/scale_run.py run

`--check FILE` simulates the scaled-down run that bench/scale_run.py measured (its tasks,
workers, model delay and per-task CPU) and prints the simulated and the measured wall time.
The defaults are the per-step costs measured on this machine (docs/scaling.md).
"""

import argparse
import heapq
import json
import random
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULTS = {
    "step_cpu_ms": 0.55,  # worker CPU per step (scale_run: ~10.5 ms per task / 19 steps)
    "commit_ms": 1.5,  # one committed upsert, p50 (step_costs, a quiet moment)
    "row_ms": 0.05,  # each further row of a group commit (batch32_per_row_us)
    "postgres_cpu_ms_per_task": 2.0,  # the database's backends, per task (scale_run)
    "broker_cpu_ms_per_task": 0.6,  # the private RabbitMQ node, per task (scale_run)
}


@dataclass(order=True)
class Event:
    at: float
    seq: int
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


@dataclass
class Worker:
    cpu_free_at: float = 0.0
    busy: float = 0.0
    running: int = 0
    waiting: list[Any] = field(default_factory=list)  # steps held back by concurrency
    committing: bool = False
    pending: list[Any] = field(default_factory=list)  # saves for the next commit
    commits: int = 0
    rows: int = 0
    peak: int = 0
    calls: int = 0  # model calls in flight
    call_queue: list[Any] = field(default_factory=list)  # steps waiting for a model slot
    peak_calls: int = 0


def simulate(args: Any) -> dict[str, Any]:
    rng = random.Random(args.seed)
    step_cpu = args.step_cpu_ms / 1000
    commit_s, row_s = args.commit_ms / 1000, args.row_ms / 1000
    workers = [Worker() for _ in range(args.workers)]
    events: list[Event] = []
    seq = 0

    def push(at: float, kind: str, data: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, Event(at, seq, kind, data))

    steps_per_task = 2 * args.turns + 1
    if args.burst:
        arrivals = [0.0] * args.burst
    else:
        t, arrivals = 0.0, []
        while t < args.seconds:
            t += rng.expovariate(args.rate)
            arrivals.append(t)
    for n, at in enumerate(arrivals):
        push(at, "arrive", n)
    started: dict[int, float] = {}
    durations: list[float] = []
    task_worker: dict[int, int] = {}
    finished: list[float] = []

    def start_step(now: float, task: int, step: int) -> None:
        w = workers[task_worker[task]]
        if w.running >= args.concurrency:
            w.waiting.append((task, step))
            return
        w.running += 1
        w.peak = max(w.peak, w.running)
        begin = max(now, w.cpu_free_at)  # the worker's one CPU, first come first served
        w.cpu_free_at = begin + step_cpu
        w.busy += step_cpu
        if step % 2 == 1:  # an assistant step: a model call (a slot of the limiter first)
            push(w.cpu_free_at, "call", (task, step))
        else:
            push(w.cpu_free_at, "save", (task, step))

    def call(now: float, wi: int, task: int, step: int) -> None:
        w = workers[wi]
        if args.model_slots and w.calls >= args.model_slots:
            w.call_queue.append((task, step))
            return
        w.calls += 1
        w.peak_calls = max(w.peak_calls, w.calls)
        push(now + args.model, "answer", (task, step))

    def start_commit(now: float, wi: int) -> None:
        w = workers[wi]
        if w.committing or not w.pending:
            return
        batch, w.pending = w.pending, []
        w.committing = True
        w.commits += 1
        w.rows += len(batch)
        push(now + commit_s + row_s * (len(batch) - 1), "committed", (wi, batch))

    end = 0.0
    while events:
        ev = heapq.heappop(events)
        now = ev.at
        if ev.kind == "arrive":
            task = ev.data
            task_worker[task] = rng.randrange(args.partitions) % args.workers
            started[task] = now
            start_step(now, task, 0)
        elif ev.kind == "call":
            task, step = ev.data
            call(now, task_worker[task], task, step)
        elif ev.kind == "answer":
            task, step = ev.data
            wi = task_worker[task]
            w = workers[wi]
            w.calls -= 1
            if w.call_queue:
                call(now, wi, *w.call_queue.pop(0))
            push(now, "save", (task, step))
        elif ev.kind == "save":
            task, step = ev.data
            wi = task_worker[task]
            workers[wi].pending.append((task, step))
            start_commit(now, wi)
        elif ev.kind == "committed":
            wi, batch = ev.data
            w = workers[wi]
            w.committing = False
            for task, step in batch:
                w.running -= 1
                if step + 1 < steps_per_task:
                    start_step(now, task, step + 1)  # local delivery to the next agent
                else:
                    durations.append(now - started[task])
                    finished.append(now)
                    end = max(end, now)
                while w.waiting and w.running < args.concurrency:
                    start_step(now, *w.waiting.pop(0))
            start_commit(now, wi)
    span = end if args.burst else args.seconds
    done = len(durations)
    ordered = sorted(durations)
    commits = sum(w.commits for w in workers)
    return {
        "tasks": done,
        "wall_s": round(end, 2),
        # completions in the second half of the arrival window: the arrival rate when the
        # system keeps up, its capacity when it does not
        "tasks_per_s": round(done / end, 1)
        if args.burst
        else round(sum(span / 2 <= t < span for t in finished) / (span / 2), 1),
        "worker_cpu_utilisation": [round(w.busy / span, 2) for w in workers] if span else [],
        "commits_per_s": round(commits / span, 1) if span else None,
        "rows_per_commit": round(sum(w.rows for w in workers) / max(1, commits), 2),
        "task_p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "task_p99_s": round(ordered[int(0.99 * (len(ordered) - 1))], 2) if ordered else None,
        "peak_steps_per_worker": max(w.peak for w in workers),
        "peak_model_calls_per_worker": max(w.peak_calls for w in workers),
        "drain_s": round(end - span, 2) if not args.burst else 0.0,
        "postgres_cores": round(done / span * args.postgres_cpu_ms_per_task / 1000, 2)
        if span
        else None,
        "broker_cores": round(done / span * args.broker_cpu_ms_per_task / 1000, 2)
        if span
        else None,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=10_000 / 60, help="tasks per second")
    p.add_argument("--seconds", type=float, default=120, help="arrivals for this long")
    p.add_argument("--burst", type=int, default=0, help="N tasks all at t=0 instead")
    p.add_argument("--turns", type=int, default=9, help="model turns per task")
    p.add_argument("--model", type=float, default=3.0, help="model seconds per turn")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--partitions", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=2048, help="CADRE_CONCURRENCY")
    p.add_argument(
        "--model-slots", type=int, default=0, help="CADRE_MODEL_MAX_CONCURRENT (0: no cap)"
    )
    for name, value in DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--check", help="a bench/scale_run.py JSON result to simulate")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.check:
        run = json.loads(Path(args.check).read_text().strip().splitlines()[-1])
        args.burst, args.workers, args.model = run["tasks"], run["workers"], run["model_delay_s"]
        args.turns = (round(run["steps_per_task"]) - 1) // 2
        args.step_cpu_ms = run["worker_cpu_ms_per_task"] / run["steps_per_task"]
        args.partitions, args.concurrency = 8, 1024  # the defaults the run used
    result = simulate(args)
    result["inputs"] = {k: v for k, v in vars(args).items() if k not in {"check", "seed"}}
    if args.check:
        result["measured_wall_s"] = run["wall_s"]
        result["simulated_over_measured"] = round(result["wall_s"] / run["wall_s"], 2)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
