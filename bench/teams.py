"""Teams benchmark: Cadre's team tasks side by side with AutoGen 0.7.5 AgentChat.

Workloads (`--only long,many,waiting,workers`; the default is long,many,waiting):
  long     one round-robin task of two assistants on the offline model, run to
           N = 200, 800 and 3,200 messages (`--long` adds 20,000, Cadre only): Cadre with
           default settings on the SQLite store (a fresh file per run), AutoGen's
           RoundRobinGroupChat of two AssistantAgents (default model context) on
           ReplayChatCompletionClient in memory, answering the offline model's line. Reports
           wall seconds and ms per message; after Cadre's 3,200 (and 20,000) run, the largest
           agent record in the SQLite file (`max_record_bytes`: every text and blob column of
           the `agents` table, summed per row, in bytes). Nothing may grow with a task's
           length: the goals are ms/msg at 3,200 <= 1.5 x at 200, records <= 64 KiB, and
           AutoGen's wall >= 2 x Cadre's at 3,200.
  many     400 tasks at once (`--tasks`) of three assistants and 10 messages, the model
           answering after 100 ms (`--delay`): Cadre's LocalRuntime with default settings on
           SQLite (submit all, run until idle) against 400 RoundRobinGroupChat runs under
           asyncio.gather on a replay client that sleeps as long. Tasks per second; goal
           Cadre >= 2 x AutoGen.
  waiting  2,000 tasks whose first speaker is a UserProxy, each parked in awaiting_input:
           the process's resident memory growth (VmRSS) per 1,000 waiting tasks.
  workers  the many workload through `cadre serve --transport rabbitmq --store postgres`
           and one `cadre worker` (default settings), submitted over HTTP; needs the
           PostgreSQL and RabbitMQ of this machine (`--workers` adds it to the default run).

    pip install -e ".[dev,bench]"
    python bench/teams.py                                                 # long, many, waiting
    python bench/teams.py --workers --long                                # everything
    python bench/teams.py --only many --sweep 16,64,256,1024             # concurrency sweep

`--sweep C1,C2,...` runs the many workload on Cadre alone once per LocalRuntime
concurrency, each in a fresh interpreter, and reports tasks/s, the resident memory the
run added (peak VmHWM minus VmRSS before it) and the most model calls waiting at once.

Every measurement runs in a fresh interpreter after a small warm-up (so none inherits another's
garbage or resident memory), one after another. Progress goes to stderr; the table, then one
JSON object (the LAST stdout line), to stdout.
"""

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from teams_app import MANY_MESSAGES, DelayedModel, many_team

from cadre.hosts.local import LocalRuntime
from cadre.models.offline import OfflineClient
from cadre.registry import Registry
from cadre.teams import Assistant, MaxMessages, RoundRobinTeam, Tasks, UserProxy

ROOT = Path(__file__).resolve().parents[1]
LONG_SIZES = (200, 800, 3200)
LONGEST = 20_000
TASK = "Write a short essay about the sea, then improve it turn by turn."
RABBITMQ = os.environ.get("CADRE_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get("CADRE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def progress(text: str) -> None:
    """One progress line on stderr."""
    print(f"  … {text}", file=sys.stderr, flush=True)


def memory_mib(field: str = "VmRSS", pid: int | None = None) -> float:
    """A process's resident memory (or its peak, `VmHWM`) in MiB, from /proc (default: this
    process)."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid or 'self'}/status")


def offline_line(name: str) -> str:
    """What the offline model answers `TASK` as participant `name` (same length on both sides)."""
    words = TASK.split()
    snippet = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
    return (
        f'[offline] As {name}, on "{snippet}": here is my contribution, a placeholder '
        "written without a language model."
    )


def padded(text: str, length: int) -> str:
    """`text`, then filler words up to `length` characters (no padding when shorter)."""
    filler = " and then some more detail"
    missing = max(0, length - len(text))
    return text + (filler * (missing // len(filler) + 1))[:missing]


def runtime(path: Path, concurrency: int | None = None) -> LocalRuntime:
    """Cadre's default local runtime on a fresh SQLite file, with a registry of its own."""
    extra: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
    return LocalRuntime.sqlite(path, registry=Registry(), **extra)


# --- A. one long task -------------------------------------------------------------------------


def max_record_bytes(path: Path) -> int:
    """The largest row of the `agents` table in bytes: every text and blob column (found with
    PRAGMA table_info, so columns added later count too) summed per row."""
    con = sqlite3.connect(path)
    try:
        columns = [row[1] for row in con.execute("PRAGMA table_info(agents)")]
        size = " + ".join(
            f"COALESCE(CASE WHEN typeof(\"{c}\") IN ('text', 'blob') "
            f'THEN length(CAST("{c}" AS BLOB)) END, 0)'
            for c in columns
        )
        (largest,) = con.execute(f"SELECT COALESCE(MAX({size}), 0) FROM agents").fetchone()
    finally:
        con.close()
    return int(largest)


async def cadre_long(messages: int, folder: Path) -> tuple[float, int]:
    """Wall seconds of one two-assistant task run to `messages` messages, and the largest
    stored agent record afterwards (bytes)."""
    path = folder / f"long-{messages}-{time.time_ns()}.db"
    team = RoundRobinTeam(
        "bench-long",
        [
            Assistant("writer", system_message="You are a writer."),
            Assistant("critic", system_message="You are a critic."),
        ],
        termination=MaxMessages(max_messages=messages),
    )
    rt = runtime(path)
    await rt.start()
    try:
        tasks = Tasks(rt)
        started = time.perf_counter()
        task_id = await tasks.submit(team, TASK)
        await rt.run_until_idle()
        wall = time.perf_counter() - started
        info = await tasks.status(task_id)
    finally:
        await rt.close()
    if info.status != "completed" or info.messages != messages:
        raise AssertionError(
            f"cadre long task: {info.status} with {info.messages} of {messages} messages "
            f"({info.stop_reason})"
        )
    return wall, max_record_bytes(path)


async def autogen_long(messages: int) -> float:
    """Wall seconds of AutoGen's RoundRobinGroupChat of two AssistantAgents to `messages`."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_ext.models.replay import ReplayChatCompletionClient

    agents: list[Any] = [
        AssistantAgent(
            name,
            model_client=ReplayChatCompletionClient([offline_line(name)] * messages),
            system_message=f"You are a {name}.",
        )
        for name in ("writer", "critic")
    ]
    team = RoundRobinGroupChat(agents, termination_condition=MaxMessageTermination(messages))
    started = time.perf_counter()
    result = await team.run(task=TASK)
    wall = time.perf_counter() - started
    if len(result.messages) != messages:
        raise AssertionError(f"autogen long task: {len(result.messages)} of {messages} messages")
    return wall


def run_long(args: argparse.Namespace) -> dict[str, Any]:
    """Workload A on both sides, each run in a fresh interpreter; Cadre alone at `LONGEST`
    with --long."""
    walls: dict[str, dict[int, float]] = {"cadre": {}, "autogen": {}}
    records: dict[int, int] = {}
    for n in (*LONG_SIZES, LONGEST) if args.long else LONG_SIZES:
        if n in LONG_SIZES:
            progress(f"long task, {n:,} messages: autogen")
            walls["autogen"][n] = in_child("autogen-long", messages=n)["wall"]
        progress(f"long task, {n:,} messages: cadre")
        found = in_child("cadre-long", messages=n)
        walls["cadre"][n], records[n] = found["wall"], found["max_record_bytes"]
    return {"walls": walls, "records": records}


# --- B. many tasks on a slow model ----------------------------------------------------------


async def cadre_many(
    count: int, delay: float, folder: Path, concurrency: int | None = None, task_chars: int = 0
) -> dict[str, float]:
    """Tasks per second for `count` three-assistant tasks at once on a `delay`-second model,
    and the most model calls that waited at once. `task_chars`: the task text padded to this
    length (every assistant's context holds it), to weigh what one step holds in memory."""
    model = DelayedModel(OfflineClient(), delay)
    team = many_team(model)
    rt = runtime(folder / f"many-{time.time_ns()}.db", concurrency)
    await rt.start()
    try:
        tasks = Tasks(rt)
        started = time.perf_counter()
        ids = [await tasks.submit(team, padded(f"{TASK} ({i})", task_chars)) for i in range(count)]
        await rt.run_until_idle()
        wall = time.perf_counter() - started
        infos = [await tasks.status(task_id) for task_id in ids]
    finally:
        await rt.close()
    wrong = [i for i in infos if i.status != "completed" or i.messages != MANY_MESSAGES]
    if wrong:
        raise AssertionError(
            f"cadre many tasks: {len(wrong)} of {count} not completed with {MANY_MESSAGES} "
            f"messages, e.g. {wrong[0].status} with {wrong[0].messages}"
        )
    return {"tasks_per_s": count / wall, "wall": wall, "peak_in_flight": model.peak}


async def autogen_many(count: int, delay: float) -> float:
    """Tasks per second for `count` RoundRobinGroupChat runs under asyncio.gather."""
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.conditions import MaxMessageTermination
    from autogen_agentchat.teams import RoundRobinGroupChat
    from autogen_ext.models.replay import ReplayChatCompletionClient

    class DelayedReplay(ReplayChatCompletionClient):
        """The replay client, sleeping `delay` before each answer."""

        async def create(self, messages: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(delay)
            return await super().create(messages, **kwargs)

    def team() -> RoundRobinGroupChat:
        agents: list[Any] = [
            AssistantAgent(
                name,
                model_client=DelayedReplay([offline_line(name)] * MANY_MESSAGES),
                system_message=f"You are a {name}.",
            )
            for name in ("planner", "writer", "critic")
        ]
        return RoundRobinGroupChat(
            agents, termination_condition=MaxMessageTermination(MANY_MESSAGES)
        )

    teams = [team() for _ in range(count)]
    started = time.perf_counter()
    results = await asyncio.gather(*(t.run(task=f"{TASK} ({i})") for i, t in enumerate(teams)))
    wall = time.perf_counter() - started
    wrong = [r for r in results if len(r.messages) != MANY_MESSAGES]
    if wrong:
        raise AssertionError(f"autogen many tasks: {len(wrong)} of {count} runs came out short")
    return count / wall


def run_many(args: argparse.Namespace) -> dict[str, float]:
    """Workload B on both sides, each in a fresh interpreter."""
    what = f"many tasks, {args.tasks} at once, {args.delay * 1000:.0f} ms model"
    progress(f"{what}: autogen")
    autogen = in_child("autogen-many", tasks=args.tasks, delay=args.delay)["tasks_per_s"]
    progress(f"{what}: cadre")
    cadre = in_child("cadre-many", tasks=args.tasks, delay=args.delay, concurrency=args.concurrency)
    return {"cadre": cadre["tasks_per_s"], "autogen": autogen}


# --- C. tasks waiting for a human -----------------------------------------------------------


async def cadre_waiting(count: int, folder: Path) -> float:
    """Resident memory added (MiB) per 1,000 tasks parked in awaiting_input."""
    team = RoundRobinTeam(
        "bench-waiting",
        [UserProxy("user"), Assistant("helper", system_message="You are a helper.")],
        termination=MaxMessages(max_messages=10),
    )
    rt = runtime(folder / f"waiting-{time.time_ns()}.db")
    await rt.start()
    try:
        tasks = Tasks(rt)
        for i in range(20):  # warm up: imports, caches, the first records
            await tasks.submit(team, f"{TASK} (warm-up {i})")
        await rt.run_until_idle()
        gc.collect()
        before = memory_mib()
        ids = [await tasks.submit(team, f"{TASK} ({i})") for i in range(count)]
        await rt.run_until_idle()
        gc.collect()
        added = memory_mib() - before
        statuses = {(await tasks.status(task_id)).status for task_id in ids}
    finally:
        await rt.close()
    if statuses != {"awaiting_input"}:
        raise AssertionError(f"waiting tasks: statuses {statuses}, not all awaiting_input")
    return added / count * 1000


# --- D. many tasks on workers (RabbitMQ + PostgreSQL) ---------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def workers_many(
    count: int, delay: float, folder: Path, concurrency: int | None = None
) -> dict[str, float]:
    """Tasks per second for the many workload through `cadre serve` and one `cadre worker`
    (default settings, or CADRE_CONCURRENCY=`concurrency`), and the worker's peak RSS."""
    import httpx

    from cadre.stores.postgres import PostgresStore
    from cadre.transports.rabbitmq import RabbitMQTransport

    name = f"bench_teams_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(POSTGRES, prefix=f"{name}_", max_size=2)
    await store.migrate()
    transport = RabbitMQTransport(RABBITMQ, name=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADRE_")}  # defaults
    env |= {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "CADRE_APP": "bench.teams_app",
        "CADRE_RABBITMQ_URL": RABBITMQ,
        "CADRE_POSTGRES_URL": POSTGRES,
        "CADRE_POSTGRES_PREFIX": f"{name}_",
        "CADRE_QUEUE_NAME": name,
        "CADRE_HEALTH_FILE": str(folder / f"{name}.health"),
        "BENCH_MODEL_DELAY": str(delay),
    }
    if concurrency is not None:
        env["CADRE_CONCURRENCY"] = str(concurrency)
    port = free_port()
    cli = [sys.executable, "-m", "cadre.cli"]
    procs = [subprocess.Popen([*cli, "worker"], cwd=ROOT, env=env)]  # noqa: ASYNC220
    serve = [*cli, "serve", "--transport", "rabbitmq", "--store", "postgres", "--port", str(port)]
    procs.append(subprocess.Popen(serve, cwd=ROOT, env=env, stdout=subprocess.DEVNULL))  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            health = Path(env["CADRE_HEALTH_FILE"])
            for _ in range(600):  # the worker connected, the API answering (bounded: 60 s)
                if all(p.poll() is None for p in procs) and health.exists():  # noqa: ASYNC240
                    try:
                        if (await http.get("/api/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("cadre worker or cadre serve did not come up")
            await asyncio.sleep(1.5)  # past the standby delay: the worker owns every partition
            started = time.perf_counter()
            ids = await submit_over_http(http, count)
            await wait_finished(store, name, count)
            wall = time.perf_counter() - started
            views = [(await http.get(f"/api/tasks/{task_id}")).json() for task_id in ids]
            peak = memory_mib("VmHWM", procs[0].pid)
        wrong = [v for v in views if v["status"] != "completed" or v["messages"] != MANY_MESSAGES]
        if wrong:
            raise AssertionError(f"workers: {len(wrong)} of {count} tasks wrong, e.g. {wrong[0]}")
        return {"tasks_per_s": count / wall, "worker_peak_rss_mib": peak}
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await transport.connect()
        await transport.delete_topology()
        await transport.close()
        await store.drop()
        await store.close()


async def submit_over_http(http: Any, count: int) -> list[str]:
    """POST `count` tasks to the many team, 32 requests at a time; their ids in order."""
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with gate:
            body = {"team": "bench-many", "task": f"{TASK} ({i})"}
            answer = await http.post("/api/tasks", json=body)
            answer.raise_for_status()
            return str(answer.json()["task_id"])

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def wait_finished(store: Any, name: str, count: int, within: float = 900) -> None:
    """Poll the workers' table until `count` team managers have finished (one query each)."""
    pool = await store._open()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        async with pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) FROM {name}_agents WHERE agent_type = 'cadre.team' AND "
                "state::jsonb ->> 'status' IN ('completed', 'failed', 'cancelled')"
            )
            row = await cur.fetchone()
        if row and row[0] >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"workers: not all {count} tasks finished within {within:.0f} s")


# --- every measurement in a fresh interpreter ----------------------------------------------


def in_child(kind: str, **params: Any) -> dict[str, Any]:
    """Measurement `kind` (see `run_child`) in a fresh interpreter: no run inherits another's
    garbage, caches or resident memory. Returns the JSON it prints last."""
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(params)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, timeout=3600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_child(kind: str, params: dict[str, Any]) -> None:
    """The child side of `in_child`: one measurement after a small warm-up; prints its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if kind == "cadre-long":
            asyncio.run(cadre_long(10, folder))
            wall, largest = asyncio.run(cadre_long(params["messages"], folder))
            found: dict[str, Any] = {"wall": wall, "max_record_bytes": largest}
        elif kind == "autogen-long":
            asyncio.run(autogen_long(10))
            found = {"wall": asyncio.run(autogen_long(params["messages"]))}
        elif kind == "autogen-many":
            asyncio.run(autogen_many(4, 0.0))
            found = {"tasks_per_s": asyncio.run(autogen_many(params["tasks"], params["delay"]))}
        elif kind == "cadre-many":
            concurrency = params.get("concurrency")
            asyncio.run(cadre_many(4, 0.0, folder, concurrency))
            gc.collect()
            before = memory_mib()
            found = asyncio.run(
                cadre_many(
                    params["tasks"], params["delay"], folder, concurrency, params.get("chars", 0)
                )
            )
            found |= {"rss_before_mib": before, "rss_added_mib": memory_mib("VmHWM") - before}
        elif kind == "waiting":
            found = {"mib_per_1000": asyncio.run(cadre_waiting(params["tasks"], folder))}
        else:
            raise SystemExit(f"unknown measurement {kind!r}")
    print(json.dumps(found))


def report_long(found: dict[str, Any], result: dict[str, Any]) -> None:
    """The long-task table and its JSON keys."""
    walls, records = found["walls"], found["records"]
    print("\nA. one long task, two assistants, offline model (Cadre on SQLite, AutoGen in memory)")
    print(f"{'messages':>9} {'cadre s':>9} {'ms/msg':>7} {'autogen s':>10} {'ms/msg':>7}"
          f" {'autogen/cadre':>14} {'largest record':>15}")  # fmt: skip
    ms = {side: {str(n): w / n * 1000 for n, w in walls[side].items()} for side in walls}
    for n in sorted(walls["cadre"]):
        peer = walls["autogen"].get(n)
        peer_cells = (
            f"{peer:>10.2f} {peer / n * 1000:>7.2f} {peer / walls['cadre'][n]:>14.2f}"
            if peer is not None
            else f"{'':>10} {'':>7} {'':>14}"
        )
        print(
            f"{n:>9,} {walls['cadre'][n]:>9.2f} {walls['cadre'][n] / n * 1000:>7.2f} "
            f"{peer_cells} {records[n]:>15,}"
        )
    growth = ms["cadre"]["3200"] / ms["cadre"]["200"]
    ratio = walls["autogen"][3200] / walls["cadre"][3200]
    print(f"per-message growth 3,200 / 200: {growth:.2f} (goal <= 1.5); AutoGen / Cadre wall at "
          f"3,200: {ratio:.2f} (goal >= 2); largest record at 3,200: {records[3200]:,} bytes "
          f"(goal <= 65,536)")  # fmt: skip
    result["ms_per_message"] = {
        side: {n: round(v, 3) for n, v in values.items()} for side, values in ms.items()
    }
    result["wall_seconds"] = {
        side: {str(n): round(w, 3) for n, w in values.items()} for side, values in walls.items()
    }
    result["per_message_growth"] = round(growth, 3)
    result["long_task_ratio"] = round(ratio, 3)
    result["max_record_bytes"] = records[3200]
    if LONGEST in records:
        result["max_record_bytes_20000"] = records[LONGEST]


def report_many(found: dict[str, float], args: argparse.Namespace, result: dict[str, Any]) -> None:
    """The many-tasks lines and their JSON keys."""
    ratio = found["cadre"] / found["autogen"]
    print(f"\nB. {args.tasks} tasks at once, three assistants, {MANY_MESSAGES} messages, model "
          f"{args.delay * 1000:.0f} ms per call")  # fmt: skip
    print(f"   cadre {found['cadre']:,.1f} tasks/s, autogen {found['autogen']:,.1f} tasks/s, "
          f"ratio {ratio:.2f} (goal >= 2)")  # fmt: skip
    result["many_tasks"] = {
        "cadre_tasks_per_s": round(found["cadre"], 2),
        "autogen_tasks_per_s": round(found["autogen"], 2),
    }
    result["many_tasks_ratio"] = round(ratio, 3)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the chosen workloads, print the table and the JSON line; return the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="long,many,waiting", help="workloads, comma-separated")
    parser.add_argument("--workers", action="store_true", help="add the workers workload")
    parser.add_argument("--long", action="store_true", help=f"add {LONGEST:,} messages (Cadre)")
    parser.add_argument("--tasks", type=int, default=400, help="tasks of the many workload")
    parser.add_argument("--delay", type=float, default=0.1, help="model seconds per call")
    parser.add_argument("--waiting", type=int, default=2000, help="tasks of the waiting workload")
    parser.add_argument("--task-chars", type=int, default=0, help="sweep: pad each task to N chars")
    parser.add_argument("--concurrency", type=int, help="Cadre's step pool (default: its own)")
    parser.add_argument("--sweep", help="concurrencies for a many-tasks sweep (Cadre only)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child[0], json.loads(args.child[1]))
        return {}
    chosen = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = chosen - {"long", "many", "waiting", "workers"}
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.workers:
        chosen.add("workers")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        long = run_long(args) if "long" in chosen else None
        many = run_many(args) if "many" in chosen and not args.sweep else None
        sweep = []
        for c in [int(c) for c in args.sweep.split(",")] if args.sweep else []:
            progress(f"sweep: {args.tasks} tasks, concurrency {c}")
            params = {"tasks": args.tasks, "delay": args.delay, "chars": args.task_chars}
            sweep.append({"concurrency": c} | in_child("cadre-many", concurrency=c, **params))
        waiting = None
        if "waiting" in chosen:
            progress(f"waiting tasks, {args.waiting:,} parked in awaiting_input")
            waiting = in_child("waiting", tasks=args.waiting)["mib_per_1000"]
        workers = None
        if "workers" in chosen:
            progress(f"workers: {args.tasks} tasks through cadre serve + 1 cadre worker")
            workers = asyncio.run(workers_many(args.tasks, args.delay, folder, args.concurrency))
    print("\nCadre teams vs AutoGen 0.7.5 AgentChat")
    if long:
        report_long(long, result)
    if many:
        report_many(many, args, result)
    if sweep:
        print(f"\nconcurrency sweep: {args.tasks} tasks, model {args.delay * 1000:.0f} ms "
              f"(Cadre, SQLite, fresh interpreter each)")  # fmt: skip
        print(f"{'concurrency':>11} {'tasks/s':>8} {'RSS added MiB':>14}"
              f" {'model calls at once':>20}")  # fmt: skip
        for point in sweep:
            print(f"{point['concurrency']:>11} {point['tasks_per_s']:>8.1f} "
                  f"{point['rss_added_mib']:>14.1f} {point['peak_in_flight']:>20}")  # fmt: skip
        result["concurrency_sweep"] = [{k: round(v, 2) for k, v in p.items()} for p in sweep]
    if waiting is not None:
        print(f"\nC. {args.waiting:,} tasks awaiting input: {waiting:.2f} MiB resident per 1,000")
        result["waiting_tasks_mib_per_1000"] = round(waiting, 3)
    if workers is not None:
        local = f", local runtime {many['cadre']:,.1f}" if many else ""
        print(f"\nD. {args.tasks} tasks on 1 cadre worker (RabbitMQ + PostgreSQL, over HTTP): "
              f"{workers['tasks_per_s']:,.1f} tasks/s{local}; the worker's peak RSS "
              f"{workers['worker_peak_rss_mib']:,.0f} MiB")  # fmt: skip
        result["workers_many_tasks_per_s"] = round(workers["tasks_per_s"], 2)
        result["workers_peak_rss_mib"] = round(workers["worker_peak_rss_mib"], 1)
    print()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
