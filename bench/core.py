"""Core benchmark: Cadre's local runtime side by side with autogen-core 0.7.5.

Workloads (identical message shapes on both sides: pydantic models with an int and a
32-character string):
  ping-pong  two agents exchange N request/response pairs, one at a time;
  fan-out    N publishes to one topic with 10 subscriber agent types (10 N deliveries).
Cadre runs on the memory store and on the SQLite store (a temporary file, WAL, group
commit) — persisting every agent's state and deduplicating every delivery — and
autogen-core on its SingleThreadedAgentRuntime, which does neither. For autogen
ping-pong both its RPC style (send_message) and its event style (publish_message) are
measured and the faster is the peer. Also measured: the import time of each package
alone (`import_ratio`) and with the names an app uses (`import_used_ratio`).
Each workload runs `--repeat` times (default 3), the runtimes interleaved round by round,
and every series reports its median: a single run on this shared 2-core VM moves by
+-20 %.

    pip install -e ".[bench]" && python bench/core.py [--pairs N] [--publishes N] [--repeat 3]
    python bench/core.py --tracing-only --pairs 5000      # quick: only the tracing ratios

Tracing, in the same run, with the same OpenTelemetry SDK and the same in-memory exporter
(a simple span processor: each span exported as it ends, and kept):
  traced_vs_autogen_traced  Cadre ping-pong with every span recorded / autogen-core's
                            SingleThreadedAgentRuntime(tracer_provider=...) ping-pong with
                            every span recorded (the faster of its two styles);
  sampled_tracing_ratio     many tasks of TASK_PAIRS pairs, parentbased_traceidratio at 0.1,
                            spans through a batch span processor (what
                            cadre.observability.configure installs) to an exporter that
                            lets them go / the same tasks with tracing off (sampled_share:
                            the share of tasks traced; every traced task has all its spans);
  tracing_ratio             Cadre ping-pong with every span recorded / tracing off, and
                            tracing_ratio_streaming with an exporter that lets spans go.
These count the process's CPU time (CLOCK), over 5 alternating rounds (medians of the
rounds' ratios; the JSON line also lists each round's traced_vs_autogen_traced and
sampled_tracing_ratio), each run started with earlier garbage collected and frozen
(`settled`).

The last line printed is one JSON object with the ratios (Cadre / autogen-core).
"""

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cadre import Agent, AgentId, Context, LocalRuntime, Message, Registry, TopicId, handler
from cadre import TypeSubscription as CadreTypeSubscription
from cadre.stores.sqlite import SQLiteStore

TEXT = "x" * 32
SUBSCRIBERS = 10


# --- Cadre side ---------------------------------------------------------------------------


class Ping(Message, name="bench.Ping"):
    seq: int
    text: str


class Pong(Message, name="bench.Pong"):
    seq: int
    text: str


class Event(Message, name="bench.Event"):
    seq: int
    text: str


class Pinger(Agent):
    """Sends the next Ping when a Pong comes back, until `limit` pairs are done."""

    limit = 0

    @handler
    async def on_pong(self, msg: Pong, ctx: Context) -> None:
        if msg.seq + 1 < self.limit:
            ctx.send(AgentId("ponger", "1"), Ping(seq=msg.seq + 1, text=msg.text))


class Ponger(Agent):
    """Answers every Ping with a Pong."""

    @handler
    async def on_ping(self, msg: Ping, ctx: Context) -> Pong:
        return Pong(seq=msg.seq, text=msg.text)


class Tally(Agent):
    """Counts the events it receives (persisted state)."""

    class State(BaseModel):
        count: int = 0

    @handler
    async def on_event(self, msg: Event, ctx: Context) -> None:
        self.state.count += 1


def _cadre_runtime(store_kind: str, registry: Registry, folder: Path) -> LocalRuntime:
    if store_kind == "sqlite":
        return LocalRuntime(store=SQLiteStore(folder / f"{time.time_ns()}.db"), registry=registry)
    return LocalRuntime(registry=registry)


async def cadre_pingpong(
    pairs: int, store_kind: str, folder: Path, clock: Any = time.perf_counter
) -> float:
    """Messages per second for `pairs` request/response pairs on Cadre (seconds of `clock`:
    wall time, or the process's CPU time for the tracing ratios)."""
    Pinger.limit = pairs
    registry = Registry()
    registry.register(Pinger, type="pinger")
    registry.register(Ponger, type="ponger")
    async with _cadre_runtime(store_kind, registry, folder) as rt:
        started = clock()
        await rt.send(
            AgentId("ponger", "1"), Ping(seq=0, text=TEXT), reply_to=AgentId("pinger", "1")
        )
        await rt.run_until_idle()
        elapsed = clock() - started
    return 2 * pairs / elapsed


async def cadre_fanout(publishes: int, store_kind: str, folder: Path) -> float:
    """Deliveries per second for `publishes` publishes to SUBSCRIBERS agent types on Cadre."""
    registry = Registry()
    for i in range(SUBSCRIBERS):
        registry.register(Tally, type=f"tally{i}")
        registry.add_subscription(CadreTypeSubscription("events", f"tally{i}"))
    topic = TopicId("events", "1")
    async with _cadre_runtime(store_kind, registry, folder) as rt:
        started = time.perf_counter()
        for seq in range(publishes):
            await rt.publish(topic, Event(seq=seq, text=TEXT))
        await rt.run_until_idle()
        elapsed = time.perf_counter() - started
        for i in range(SUBSCRIBERS):
            count = (await rt.state(AgentId(f"tally{i}", "1"))).count  # type: ignore[attr-defined]
            assert count == publishes, f"tally{i} got {count} of {publishes}"
    return SUBSCRIBERS * publishes / elapsed


class TaskPinger(Agent):
    """Ping-pong within one task per key (the sampled workload: many small tasks)."""

    limit = 0

    @handler
    async def on_pong(self, msg: Pong, ctx: Context) -> None:
        if msg.seq + 1 < self.limit:
            ctx.send(AgentId("ponger", ctx.agent_id.key), Ping(seq=msg.seq + 1, text=msg.text))


TASK_PAIRS = 10
"""Pairs per task in the sampled workload (`sampled_tracing_ratio`)."""

CLOCK = time.process_time
"""What the tracing ratios count: the process's CPU time (every thread's, the batch span
processor's included), which other work on this shared machine disturbs far less than
wall time."""


async def cadre_pingpong_tasks(pairs: int) -> float:
    """Messages per second for `pairs` request/response pairs spread over tasks of
    `TASK_PAIRS` pairs each (all submitted, then run), on the memory store."""
    TaskPinger.limit = TASK_PAIRS
    registry = Registry()
    registry.register(TaskPinger, type="pinger")
    registry.register(Ponger, type="ponger")
    tasks = max(pairs // TASK_PAIRS, 1)
    async with LocalRuntime(registry=registry) as rt:
        started = CLOCK()
        for key in range(tasks):
            await rt.send(
                AgentId("ponger", str(key)),
                Ping(seq=0, text=TEXT),
                reply_to=AgentId("pinger", str(key)),
            )
        await rt.run_until_idle()
        elapsed = CLOCK() - started
    return 2 * tasks * TASK_PAIRS / elapsed


def _provider(sampler: Any = None) -> tuple[Any, Any]:
    """An SDK tracer provider recording every sampled span into the in-memory exporter
    (a simple span processor: the span is exported as it ends), and that exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def cadre_pingpong_traced(
    pairs: int, folder: Path, *, keep: bool = True, sends: bool | None = None
) -> float:
    """Ping-pong on the memory store with every span recorded and exported (SDK, simple
    span processor). `keep`: the SDK's in-memory exporter, which holds every span until
    the end (as the issue specifies); otherwise an exporter that counts the spans and
    lets them go, as a network exporter does once a batch is sent. `sends`:
    CADRE_TRACE_SENDS (None: Cadre's default)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from cadre import telemetry

    class CountingExporter(SpanExporter):
        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Any) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    if keep:
        provider, kept = _provider()
    else:
        counted = CountingExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(counted))
    tel = telemetry.Telemetry(tracer_provider=provider, trace_sends=sends)
    with telemetry.installed(tel):
        rate = await cadre_pingpong(pairs, "memory", folder, CLOCK)
    spans = len(kept.get_finished_spans()) if keep else counted.count
    expected = 4 * pairs - 2 if tel.trace_sends else 2 * pairs  # send + process, or process
    assert spans >= expected, f"only {spans} spans recorded"
    provider.shutdown()
    return rate


SAMPLE_RATIO = 0.1


async def cadre_pingpong_sampled(pairs: int) -> tuple[float, float]:
    """`cadre_pingpong_tasks` with the SDK's parentbased_traceidratio sampler at
    `SAMPLE_RATIO`, spans going through the pipeline `cadre.observability.configure`
    installs (a batch span processor) to an exporter that notes each span's task and
    lets it go, as a network exporter does once a batch is sent. Returns the rate and the
    share of tasks traced, after checking that every traced task has all its steps. The
    trace ids come from a seeded generator, so every round samples the same tasks."""
    import random
    from collections import Counter

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    from cadre import telemetry

    class TaskCounter(SpanExporter):
        def __init__(self) -> None:
            self.steps: Counter[Any] = Counter()

        def export(self, spans: Any) -> SpanExportResult:
            for span in spans:
                self.steps[span.attributes.get("messaging.message.conversation_id")] += 1
            return SpanExportResult.SUCCESS

    counter = TaskCounter()
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(SAMPLE_RATIO), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(counter))
    state = random.getstate()
    random.seed(18)
    try:
        with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
            rate = await cadre_pingpong_tasks(pairs)
    finally:
        random.setstate(state)
    provider.shutdown()
    tasks = max(pairs // TASK_PAIRS, 1)
    steps = {task: n for task, n in counter.steps.items() if task is not None}
    # Whole tasks: a traced task has its client's send span and one span for each of its
    # 2 x TASK_PAIRS steps.
    assert all(n == 2 * TASK_PAIRS + 1 for n in steps.values()), steps
    return rate, len(steps) / tasks


def settled(run: Any) -> Any:
    """`asyncio.run(run)` with what earlier runs left collected and frozen, so the cyclic
    GC's full collections (whose cost grows with every object this process holds, e.g. the
    other runtime's modules) fall on no run by chance."""
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(run)
    finally:
        gc.unfreeze()


def tracing_ratios(pairs: int, folder: Path, rounds: int = 5) -> dict[str, Any]:
    """Ping-pong with tracing on against off, and Cadre traced against autogen-core traced
    (same SDK, same in-memory exporter), alternating `rounds` times (medians: this
    machine is shared, single runs are noisy). Also many small tasks sampled at
    `SAMPLE_RATIO` against tracing off."""
    runs: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    for _ in range(rounds):
        add("traced", settled(cadre_pingpong_traced(pairs, folder)))
        add("traced_streaming", settled(cadre_pingpong_traced(pairs, folder, keep=False)))
        add("untraced", settled(cadre_pingpong(pairs, "memory", folder, CLOCK)))
        add(
            "autogen_traced",
            max(settled(autogen_pingpong(pairs, traced=True, clock=CLOCK)).values()),
        )
        rate, share = settled(cadre_pingpong_sampled(pairs))
        add("sampled", rate)
        add("sampled_share", share)
        add("tasks_untraced", settled(cadre_pingpong_tasks(pairs)))

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(runs[a], runs[b], strict=True)]

    rates = {name: statistics.median(values) for name, values in runs.items()}
    return {
        **rates,
        "ratio": statistics.median(ratios("traced", "untraced")),
        "ratio_streaming": statistics.median(ratios("traced_streaming", "untraced")),
        "vs_autogen_traced": statistics.median(ratios("traced", "autogen_traced")),
        "sampled_ratio": statistics.median(ratios("sampled", "tasks_untraced")),
        "vs_autogen_traced_rounds": ratios("traced", "autogen_traced"),
        "sampled_ratio_rounds": ratios("sampled", "tasks_untraced"),
    }


def print_tracing(tracing: dict[str, Any]) -> None:
    """The tracing lines of the report."""
    print(
        f"tracing: ping-pong on memory {tracing['traced']:,.0f} msgs/s with every span recorded "
        f"(in-memory exporter), {tracing['untraced']:,.0f} without; ratio {tracing['ratio']:.2f}"
    )
    print(
        f"         with an exporter that lets spans go {tracing['traced_streaming']:,.0f} msgs/s; "
        f"ratio {tracing['ratio_streaming']:.2f}"
    )
    print(
        f"         autogen-core with its tracing, same SDK and exporter "
        f"{tracing['autogen_traced']:,.0f} msgs/s; Cadre / autogen-core "
        f"{tracing['vs_autogen_traced']:.2f}"
    )
    print(
        f"         tasks of {TASK_PAIRS} pairs, parentbased_traceidratio {SAMPLE_RATIO} "
        f"({tracing['sampled_share']:.0%} of tasks traced) {tracing['sampled']:,.0f} msgs/s, "
        f"{tracing['tasks_untraced']:,.0f} untraced; ratio {tracing['sampled_ratio']:.2f}\n"
    )


def _rounded(values: list[float]) -> list[float]:
    return [round(v, 3) for v in values]


def tracing_json(tracing: dict[str, Any]) -> dict[str, Any]:
    """The tracing ratios of the JSON line."""
    return {
        "tracing_ratio": round(tracing["ratio"], 3),
        "tracing_ratio_streaming": round(tracing["ratio_streaming"], 3),
        "traced_vs_autogen_traced": round(tracing["vs_autogen_traced"], 3),
        "sampled_tracing_ratio": round(tracing["sampled_ratio"], 3),
        "sampled_share": round(tracing["sampled_share"], 3),
        "traced_vs_autogen_traced_rounds": _rounded(tracing["vs_autogen_traced_rounds"]),
        "sampled_tracing_ratio_rounds": _rounded(tracing["sampled_ratio_rounds"]),
    }


# --- autogen-core side --------------------------------------------------------------------


class APing(BaseModel):
    seq: int
    text: str


class APong(BaseModel):
    seq: int
    text: str


class AEvent(BaseModel):
    seq: int
    text: str


class AStart(BaseModel):
    pairs: int


async def autogen_pingpong(
    pairs: int, *, traced: bool = False, clock: Any = time.perf_counter
) -> dict[str, float]:
    """Messages per second on autogen-core, in its RPC style and its event style.
    `traced`: with its own tracing (``tracer_provider=``) recording every span into the
    SDK's in-memory exporter, as `cadre_pingpong_traced` does."""
    from autogen_core import (
        AgentId as AAgentId,
    )
    from autogen_core import (
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        TypeSubscription,
        message_handler,
    )
    from autogen_core import (
        TopicId as ATopicId,
    )

    class RpcPonger(RoutedAgent):
        @message_handler
        async def on_ping(self, message: APing, ctx: MessageContext) -> APong:
            return APong(seq=message.seq, text=message.text)

    class RpcDriver(RoutedAgent):
        @message_handler
        async def on_start(self, message: AStart, ctx: MessageContext) -> None:
            target = AAgentId("ponger", "1")
            for seq in range(message.pairs):
                await self.send_message(APing(seq=seq, text=TEXT), target)

    results: dict[str, float] = {}
    providers: list[Any] = []

    def runtime_() -> Any:
        if not traced:
            return SingleThreadedAgentRuntime(ignore_unhandled_exceptions=False)
        provider, exporter = _provider()
        providers.append((provider, exporter))
        return SingleThreadedAgentRuntime(
            ignore_unhandled_exceptions=False, tracer_provider=provider
        )

    runtime = runtime_()
    await RpcPonger.register(runtime, "ponger", lambda: RpcPonger("ponger"))
    await RpcDriver.register(runtime, "driver", lambda: RpcDriver("driver"))
    runtime.start()
    started = clock()
    await runtime.send_message(AStart(pairs=pairs), AAgentId("driver", "1"))
    results["send"] = 2 * pairs / (clock() - started)
    await runtime.stop_when_idle()

    done = asyncio.get_running_loop().create_future()

    class EventPonger(RoutedAgent):
        @message_handler
        async def on_ping(self, message: APing, ctx: MessageContext) -> None:
            await self.publish_message(
                APong(seq=message.seq, text=message.text), ATopicId("pinger", "1")
            )

    class EventPinger(RoutedAgent):
        @message_handler
        async def on_pong(self, message: APong, ctx: MessageContext) -> None:
            if message.seq + 1 < pairs:
                await self.publish_message(
                    APing(seq=message.seq + 1, text=message.text), ATopicId("ponger", "1")
                )
            elif not done.done():
                done.set_result(None)

    runtime = runtime_()
    await EventPonger.register(runtime, "ponger", lambda: EventPonger("ponger"))
    await EventPinger.register(runtime, "pinger", lambda: EventPinger("pinger"))
    await runtime.add_subscription(TypeSubscription("ponger", "ponger"))
    await runtime.add_subscription(TypeSubscription("pinger", "pinger"))
    runtime.start()
    started = clock()
    await runtime.publish_message(APing(seq=0, text=TEXT), ATopicId("ponger", "1"))
    await done
    results["publish"] = 2 * pairs / (clock() - started)
    await runtime.stop_when_idle()
    for provider, exporter in providers:
        assert len(exporter.get_finished_spans()) >= 2 * pairs, "autogen recorded no spans"
        provider.shutdown()
    return results


async def autogen_fanout(publishes: int) -> float:
    """Deliveries per second on autogen-core for the fan-out workload."""
    from autogen_core import (
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        TypeSubscription,
        message_handler,
    )
    from autogen_core import (
        TopicId as ATopicId,
    )

    counts: dict[str, int] = {}

    class ATally(RoutedAgent):
        @message_handler
        async def on_event(self, message: AEvent, ctx: MessageContext) -> None:
            counts[self.id.type] = counts.get(self.id.type, 0) + 1

    runtime = SingleThreadedAgentRuntime(ignore_unhandled_exceptions=False)
    for i in range(SUBSCRIBERS):
        await ATally.register(runtime, f"tally{i}", lambda: ATally("tally"))
        await runtime.add_subscription(TypeSubscription("events", f"tally{i}"))
    runtime.start()
    topic = ATopicId("events", "1")
    started = time.perf_counter()
    for seq in range(publishes):
        await runtime.publish_message(AEvent(seq=seq, text=TEXT), topic)
    await runtime.stop_when_idle()
    elapsed = time.perf_counter() - started
    assert all(counts.get(f"tally{i}") == publishes for i in range(SUBSCRIBERS)), counts
    return SUBSCRIBERS * publishes / elapsed


# --- import time ----------------------------------------------------------------------------


CADRE_APP_NAMES = "Agent, Context, LocalRuntime, Message, handler"
AG_NAMES = "RoutedAgent, SingleThreadedAgentRuntime, message_handler"


def import_seconds(code: str, repeats: int = 7) -> float:
    """Median wall time of running `code` (imports) in a fresh interpreter, minus a bare start."""

    def median_run(code: str) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    return max(median_run(code) - median_run("pass"), 1e-6)


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every measurement, print the table and the JSON line; return the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds; each series reports its median (default 3)"
    )
    parser.add_argument(
        "--tracing-only", action="store_true", help="only tracing on against off (quick)"
    )
    args = parser.parse_args(argv)
    if args.tracing_only:
        with tempfile.TemporaryDirectory() as tmp:
            tracing = tracing_ratios(args.pairs, Path(tmp))
        print_tracing(tracing)
        result = tracing_json(tracing)
        print(json.dumps(result))
        return result

    def progress(text: str) -> None:
        print(f"  … {text}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # Every workload runs `repeat` times, the runtimes interleaved round by round, and
        # each series reports its median: this machine's speed drifts by +-20 % between
        # runs, and interleaving spreads the drift evenly over both sides.
        runs: dict[str, list[float]] = {}
        for round_ in range(1, args.repeat + 1):
            tag = f"[{round_}/{args.repeat}]"
            progress(f"{tag} autogen-core ping-pong, {args.pairs} pairs (send and publish)")
            for style, rate in asyncio.run(autogen_pingpong(args.pairs)).items():
                runs.setdefault(f"autogen_pingpong_{style}", []).append(rate)
            progress(f"{tag} autogen-core fan-out, {args.publishes} publishes x {SUBSCRIBERS}")
            runs.setdefault("autogen_fanout", []).append(
                asyncio.run(autogen_fanout(args.publishes))
            )
            round_folder = folder / f"round{round_}"
            round_folder.mkdir()
            for store in ("memory", "sqlite"):
                for workload, run in (("pingpong", cadre_pingpong), ("fanout", cadre_fanout)):
                    progress(f"{tag} cadre {workload} on {store}")
                    count = args.pairs if workload == "pingpong" else args.publishes
                    runs.setdefault(f"cadre_{workload}_{store}", []).append(
                        asyncio.run(run(count, store, round_folder))
                    )
        median = {name: statistics.median(rates) for name, rates in runs.items()}
        ag_pp = {
            "send": median["autogen_pingpong_send"],
            "publish": median["autogen_pingpong_publish"],
        }
        ag_fo = median["autogen_fanout"]
        cadre: dict[tuple[str, str], float] = {
            (workload, store): median[f"cadre_{workload}_{store}"]
            for workload in ("pingpong", "fanout")
            for store in ("memory", "sqlite")
        }
        progress("cadre ping-pong on memory, tracing on and off, alternating")
        tracing = tracing_ratios(args.pairs, folder)
    progress("import times (fresh interpreters)")
    imp_cadre, imp_autogen = import_seconds("import cadre"), import_seconds("import autogen_core")
    # What a cold start really pays: the names an app uses, not just the package.
    imp_cadre_used = import_seconds(f"import cadre; from cadre import {CADRE_APP_NAMES}")
    imp_autogen_used = import_seconds(f"import autogen_core; from autogen_core import {AG_NAMES}")

    ag_best_style = max(ag_pp, key=lambda k: ag_pp[k])
    peer = {"pingpong": ag_pp[ag_best_style], "fanout": ag_fo}
    print(
        f"\nCadre local runtime vs autogen-core 0.7.5 SingleThreadedAgentRuntime "
        f"({args.pairs} pairs, {args.publishes} publishes x {SUBSCRIBERS} subscribers)\n"
    )
    print(f"{'workload':<10} {'runtime':<34} {'msgs/s':>10} {'ratio':>7}")
    for workload in ("pingpong", "fanout"):
        label = f"autogen-core ({ag_best_style})" if workload == "pingpong" else "autogen-core"
        print(f"{workload:<10} {label:<34} {peer[workload]:>10,.0f} {1.0:>7.2f}")
        if workload == "pingpong":
            other = "publish" if ag_best_style == "send" else "send"
            print(
                f"{'':<10} {'autogen-core (' + other + ')':<34} {ag_pp[other]:>10,.0f} "
                f"{ag_pp[other] / peer[workload]:>7.2f}"
            )
        for store in ("memory", "sqlite"):
            rate = cadre[workload, store]
            print(
                f"{'':<10} {'cadre, ' + store + ' store':<34} {rate:>10,.0f} "
                f"{rate / peer[workload]:>7.2f}"
            )
    print(
        f"\nimport cadre {imp_cadre * 1000:.0f} ms, import autogen_core "
        f"{imp_autogen * 1000:.0f} ms, ratio {imp_cadre / imp_autogen:.2f}"
    )
    print(
        f"with the names an app uses ({CADRE_APP_NAMES}): cadre {imp_cadre_used * 1000:.0f} ms, "
        f"autogen_core {imp_autogen_used * 1000:.0f} ms, "
        f"ratio {imp_cadre_used / imp_autogen_used:.2f}\n"
    )
    print_tracing(tracing)
    result = {
        "pingpong_memory_ratio": round(cadre["pingpong", "memory"] / peer["pingpong"], 3),
        "pingpong_sqlite_ratio": round(cadre["pingpong", "sqlite"] / peer["pingpong"], 3),
        "fanout_memory_ratio": round(cadre["fanout", "memory"] / peer["fanout"], 3),
        "fanout_sqlite_ratio": round(cadre["fanout", "sqlite"] / peer["fanout"], 3),
        **tracing_json(tracing),
        "import_ratio": round(imp_cadre / imp_autogen, 3),
        "import_used_ratio": round(imp_cadre_used / imp_autogen_used, 3),
        "msgs_per_s": {f"cadre_{w}_{s}": round(v) for (w, s), v in cadre.items()}
        | {f"autogen_pingpong_{k}": round(v) for k, v in ag_pp.items()}
        | {"autogen_fanout": round(ag_fo)}
        | {
            "cadre_pingpong_memory_traced": round(tracing["traced"]),
            "cadre_pingpong_memory_traced_streaming": round(tracing["traced_streaming"]),
            "cadre_pingpong_memory_untraced": round(tracing["untraced"]),
            "autogen_pingpong_traced": round(tracing["autogen_traced"]),
            "cadre_tasks_sampled": round(tracing["sampled"]),
            "cadre_tasks_untraced": round(tracing["tasks_untraced"]),
        },
        "import_ms": {
            "cadre": round(imp_cadre * 1000, 1),
            "autogen_core": round(imp_autogen * 1000, 1),
            "cadre_used": round(imp_cadre_used * 1000, 1),
            "autogen_core_used": round(imp_autogen_used * 1000, 1),
        },
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
