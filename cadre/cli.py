"""The `cadre` command: inspect agents, send a message on the embedded runtime, manage
dead letters. Every command runs on the local runtime and its SQLite file (CADRE_STATE)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .apps import load_app
from .errors import CadreError, ConfigurationError
from .settings import Settings

if TYPE_CHECKING:
    from .hosts.local import LocalRuntime


def _runtime(settings: Settings) -> LocalRuntime:
    from .hosts.local import LocalRuntime

    return LocalRuntime.from_settings(settings)


def cmd_agents(args: argparse.Namespace, settings: Settings) -> int:
    """List registered agent types, the messages each handles, and subscriptions."""
    from .registry import default_registry

    load_app(settings.app_modules)
    if not default_registry.types:
        print(f"no agent types registered by {', '.join(settings.app_modules)}")
        return 0
    for name, entry in sorted(default_registry.types.items()):
        handled = sorted(
            f"{m.message_name} v{m.message_version}" if m.message_name else f"{m.__qualname__}*"
            for m in entry.cls.handled_messages()
        )
        topics = [
            str(getattr(s, "topic_type", None) or f"{getattr(s, 'topic_type_prefix', '')}*")
            for s in default_registry.subscriptions
            if s.agent_type == name
        ]
        print(f"{name}  ({entry.cls.__module__}.{entry.cls.__qualname__})")
        print(f"  handles: {', '.join(handled) or '-'}")
        if topics:
            print(f"  subscribes to: {', '.join(topics)}")
    return 0


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    """Send one message on the embedded runtime and run until idle."""
    from .ids import AgentId
    from .messages import contracts

    load_app(settings.app_modules)
    to = AgentId.parse(args.agent)
    cls = contracts.get(args.message)
    _check_recipient(to, cls, settings.app_modules)
    message = cls.model_validate_json(args.payload)
    reply_to = AgentId.parse(args.reply_to) if args.reply_to else None

    async def run() -> int:
        async with _runtime(settings) as rt:
            before = len(await rt.store.list_dead_letters(limit=10_000))
            envelope = await rt.send(to, message, reply_to=reply_to)
            print(f"sent {envelope.message} to {to} (envelope {envelope.id})")
            await rt.run_until_idle()
            state = await rt.state(to)
            print(f"state of {to}: {state.model_dump_json()}")
            if reply_to is None:
                for reply in await rt.replies(envelope.task_id):
                    print(
                        f"reply from {reply.sender}: {reply.message} "
                        f"{json.dumps(reply.payload, separators=(',', ':'))}"
                    )
            timers = rt.transport.timers()
            if timers:
                print(f"{timers} timer(s) pending: they fire when the runtime next runs")
            dead = len(await rt.store.list_dead_letters(limit=10_000)) - before
            if dead:
                print(f"{dead} new dead letter(s): see `cadre dlq list`", file=sys.stderr)
                return 1
            return 0

    with traced(args.trace):
        return asyncio.run(run())


def _check_recipient(to: Any, cls: Any, app: Sequence[str]) -> None:
    """Refuse, before anything is sent, a recipient type that is not registered or that
    has no handler for the message (the runtime would dead-letter it)."""
    from .registry import default_registry

    entry = default_registry.types.get(to.type)
    if entry is None:
        known = ", ".join(sorted(default_registry.types)) or "none"
        raise ConfigurationError(
            f"no agent type {to.type!r} is registered by {', '.join(app)} (known: "
            f"{known}); nothing was sent. `cadre agents` lists them"
        )
    handled = entry.cls.handled_messages()
    if not any(issubclass(cls, h) for h in handled):
        names = ", ".join(sorted(h.message_name or h.__qualname__ for h in handled)) or "none"
        raise ConfigurationError(
            f"agent type {to.type!r} has no handler for {cls.message_name} (it handles: "
            f"{names}); nothing was sent"
        )


@contextlib.contextmanager
def traced(path: str | None) -> Iterator[None]:
    """With a path: record every span of the command to it (JSON lines), then print the
    tree. Without: export as the environment says (`cadre.observability.configure`)."""
    from . import observability, telemetry

    if path is None:
        observability.configure(role="cli")
        yield
        return
    Path(path).unlink(missing_ok=True)
    provider = observability.trace_to_file(path)
    try:
        with telemetry.installed(telemetry.Telemetry(tracer_provider=provider)):
            yield
    finally:
        provider.shutdown()
        print(f"\ntrace written to {path}:")
        print(observability.span_tree(path))


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """List, show and redrive dead letters."""
    if args.dlq_command in ("list", "show"):
        return asyncio.run(_dlq_look(args, settings))
    load_app(settings.app_modules)
    return asyncio.run(_dlq_redrive(args, settings))


async def _dlq_look(args: argparse.Namespace, settings: Settings) -> int:
    """`dlq list` and `dlq show`: read-only, so they work while a runtime owns the file."""
    from .stores.base import StateStore

    store: StateStore
    if args.store == "postgres":  # the workers' store
        from .stores.postgres import PostgresStore

        workers = settings.workers
        store = PostgresStore(
            workers.postgres_dsn, prefix=workers.postgres_prefix, max_size=1, cache_size=0
        )
    else:
        from .stores.sqlite import SQLiteStore

        store = SQLiteStore(settings.local.state_path, readonly=True)
    try:
        if args.dlq_command == "show":
            print(json.dumps(_letter_json(await store.get_dead_letter(args.id)), indent=2))
            return 0
        letters = await store.list_dead_letters(limit=args.limit)
        if args.json:
            print(json.dumps([_letter_json(d) for d in letters], indent=2))
            return 0
        if not letters:
            print("no dead letters")
        for d in letters:
            print(
                f"{d.id}  {d.failed_at:%Y-%m-%d %H:%M:%S}  {d.reason:<20} "
                f"{d.message or '-'} -> {d.agent or '-'}  ({d.attempts} attempt(s))"
            )
        return 0
    finally:
        await store.close()


async def _dlq_redrive(args: argparse.Namespace, settings: Settings) -> int:
    """`dlq redrive`: send dead letters again; on the local runtime, also run them. With
    ``--store postgres`` they go to the workers' queues, and the running `cadre worker`s
    handle them."""
    from .runtime import Runtime

    rt: Runtime
    local: LocalRuntime | None = None
    if args.store == "postgres":
        from .hosts.worker_api import WorkersRuntime
        from .registry import default_registry

        rt = WorkersRuntime.from_settings(settings, registry=default_registry)
        where = f" (sent to the workers' queue {settings.workers.queue_name!r})"
    else:
        rt = local = _runtime(settings)
        where = ""
    try:
        ids = (
            [d.id for d in await rt.store.list_dead_letters(limit=100_000)]
            if args.all
            else args.ids
        )
        if not ids:
            print("nothing to redrive")
            return 0
        await rt.start()
        for letter_id in ids:
            await rt.redrive(letter_id)
            print(f"redriven {letter_id}{where}")
        if local is None or args.no_run:
            return 0
        await local.run_until_idle()
        left = {d.id for d in await rt.store.list_dead_letters(limit=100_000)}
        failed = [i for i in ids if i in left]
        print(f"handled {len(ids) - len(failed)}, dead-lettered again {len(failed)}")
        return 1 if failed else 0
    finally:
        await rt.close()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Consume RabbitMQ partitions and run steps on PostgreSQL until SIGTERM."""
    from . import observability
    from .hosts._worker_log import configure_logging
    from .hosts.worker import config_from_settings, run_worker

    load_app(settings.app_modules)
    configure_logging()
    observability.configure(role="worker")
    overrides = {
        "partitions": args.partitions,
        "concurrency": args.concurrency,
        "health_port": args.health_port,
    }
    return run_worker(config_from_settings(settings, **overrides), settings.retry.policy())


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    """Create the PostgreSQL tables of the workers' store."""
    from .hosts.worker import migrate
    from .stores._postgres_admin import safe_dsn

    workers = settings.workers
    created = asyncio.run(migrate(workers.postgres_dsn, workers.postgres_prefix))
    if created:
        print(f"created database {created!r}")
    print(f"migrated {workers.postgres_prefix}* tables in {safe_dsn(workers.postgres_dsn)}")
    return 0


SHOWN_BODY_CHARS = 65_536
"""The most of a dead letter's raw body `dlq list/show` prints when it is not readable JSON."""


def _letter_json(letter: Any) -> dict[str, Any]:
    """Any stored bytes: JSON as JSON; anything else (not JSON, nested deeper than the
    parser goes) as text, shortened past `SHOWN_BODY_CHARS` and said so."""
    try:
        body: Any = json.loads(letter.body)
        json.dumps(body, indent=2)  # printed again below: as deep as the printer goes
    except (ValueError, RecursionError):
        body = letter.body.decode("utf-8", errors="replace")
        if len(body) > SHOWN_BODY_CHARS:
            more = len(body) - SHOWN_BODY_CHARS
            body = f"{body[:SHOWN_BODY_CHARS]}... [{more:,} more characters]"
    return {
        "id": letter.id,
        "reason": letter.reason,
        "detail": letter.detail,
        "failed_at": letter.failed_at.isoformat(),
        "attempts": letter.attempts,
        "agent": letter.agent,
        "message": letter.message,
        "task_id": letter.task_id,
        "body": body,
        **letter.extra,
    }


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre run TASK`: run a team on the local runtime, printing the conversation;
    `cadre run --continue TASK_ID TEXT`: run a finished task again with the user's TEXT."""
    if not args.task.strip():
        what = "your next message" if args.continue_id else "the task"
        raise ConfigurationError(f"{what} is empty: say what the team should do")
    if args.continue_id:
        return _console(args, settings, task_id=args.continue_id, text=args.task)
    return _console(args, settings, task=args.task)


def cmd_teams(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre teams`: every team the app registers: pattern, participants, termination."""
    from .hosts import console

    load_app(settings.app_modules)
    found = [console.team_summary(team) for team in console.teams()]
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print(f"no teams registered by {', '.join(settings.app_modules)}")
    for team in found:
        members = ", ".join(
            p["name"] + ("" if p["kind"] == "assistant" else f" ({p['kind'].replace('_', ' ')})")
            for p in team["participants"]
        )
        print(f"{team['name']}  ({team['pattern']})  {team['description']}")
        print(f"  participants: {members}")
        stops = [team["termination"]] if team["termination"] else []
        if team["pattern"] == "magentic_one":
            stops.append("the orchestrator judging the request done")
        if team["max_turns"]:
            stops.append(f"{team['max_turns']} turns")
        print(f"  stops on: {' or '.join(stops) or 'nothing but a failure or a cancel'}")
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre resume TASK_ID`: continue a task from the store."""
    return _console(args, settings, task_id=args.task_id)


def _console(args: argparse.Namespace, settings: Settings, **what: str) -> int:
    from .hosts import console

    if args.run_state:
        settings = settings.replace(local__state_path=Path(args.run_state))
    load_app(settings.app_modules)
    task_ids = [what["task_id"]] if "task_id" in what else []

    async def go() -> int:
        async with _runtime(settings) as runtime:
            if "text" in what:
                return await console.continue_task(runtime, what["task_id"], what["text"] or None)
            if "task_id" in what:
                return await console.resume_task(runtime, what["task_id"])
            team = console.find_team(args.team)
            return await console.run_task(runtime, team, what["task"], started=task_ids.append)

    try:
        with traced(args.trace):
            return asyncio.run(go())
    except KeyboardInterrupt:
        state = f" --state {args.run_state}" if args.run_state else ""
        then = (
            f"`cadre resume {task_ids[0]}{state}` continues it"
            if task_ids
            else "it had not started, so there is nothing to resume"
        )
        print(f"\ninterrupted: the task is saved; {then}", file=sys.stderr, flush=True)
        return 130


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre serve`: the HTTP API and the live page on the local runtime."""
    from .hosts.serve import serve

    if args.serve_state:
        settings = settings.replace(local__state_path=Path(args.serve_state))
    if args.serve_app:
        settings = settings.replace(app_modules=tuple(args.serve_app.split(",")))
    workers = (args.serve_transport, args.serve_store) == ("rabbitmq", "postgres")
    if not workers and (args.serve_transport, args.serve_store) != ("local", "sqlite"):
        print(
            "cadre serve: --transport rabbitmq goes with --store postgres (in front of "
            "`cadre worker` processes); the default is --transport local --store sqlite",
            file=sys.stderr,
        )
        return 2
    load_app(settings.app_modules)
    return asyncio.run(
        serve(
            settings,
            args.host,
            args.port,
            workers=workers,
            insecure_no_key=args.insecure_no_key,
        )
    )


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre schema export|check`: write or guard the committed contracts in schemas/."""
    from . import schema_files

    load_app(settings.app_modules)
    found, directory = schema_files.collect(), Path(args.dir)
    if args.schema_command == "export":
        written = schema_files.export(found, directory)
        print(f"{len(found)} contract(s) in {directory}/; {len(written)} file(s) written")
        return 0
    problems = schema_files.check(found, directory)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("release breaking changes as a new version: docs/contracts.md", file=sys.stderr)
        return 1
    print(f"{len(found)} contract(s) match {directory}/")
    return 0


def cmd_infra(args: argparse.Namespace, settings: Settings) -> int:
    """`cadre infra agent-types`: the agent types and subscriptions infra/ deploys."""
    from . import infra
    from .registry import default_registry

    load_app(settings.app_modules)
    document = infra.agent_types_document(default_registry)
    if args.check:
        problem = infra.check_file(document, Path(args.check))
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{args.check} matches the registry ({len(document['agentTypes'])} agent types)")
        return 0
    if args.write:
        Path(args.write).write_text(infra.render(document))
        print(f"wrote {len(document['agentTypes'])} agent types to {args.write}")
        return 0
    print(infra.render(document), end="")
    return 0


EXAMPLES = """examples:
  cadre run "Plan a three-day trip to Lisbon"        the default team, offline model
  cadre teams                                        every team: cadre run --team NAME "..."
  cadre serve                                        the API and the live page on :7071
  cadre agents                                       agent types and their messages
  cadre send notebook/alice app.AddNote '{"text": "buy milk"}'
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `cadre` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cadre",
        description="Teams of AI agents as durable actors. Commands run on the local runtime "
        "(SQLite file CADRE_STATE, default .cadre/cadre.db) with the app modules in CADRE_APP "
        "(default: agents).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cadre {__version__}")
    parser.add_argument("--state", help="the SQLite file (overrides CADRE_STATE)")
    parser.add_argument("--app", help="app modules to import (overrides CADRE_APP)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agents = sub.add_parser("agents", help="list agent types and the messages they handle")
    agents.set_defaults(func=cmd_agents)

    teams_cmd = sub.add_parser(
        "teams", help="list teams: pattern, participants, termination (--json for JSON)"
    )
    teams_cmd.add_argument("--json", action="store_true", help="print JSON")
    teams_cmd.set_defaults(func=cmd_teams)

    send = sub.add_parser(
        "send",
        help="send a message on the local runtime and run until idle",
        epilog='example: cadre send notebook/alice app.AddNote \'{"text": "buy milk"}\'\n'
        "(`cadre agents` lists the agent types and the messages each handles)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("agent", help="recipient, as type/key (e.g. notebook/alice)")
    send.add_argument("message", help="the message contract name, e.g. app.AddNote")
    send.add_argument("payload", nargs="?", default="{}", help="the message as JSON")
    send.add_argument("--reply-to", help="where replies go, as type/key")
    send.add_argument("--trace", metavar="PATH", help="write the spans to PATH (JSON lines)")
    send.set_defaults(func=cmd_send)

    dlq = sub.add_parser("dlq", help="list, show and redrive dead letters")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="sqlite: the local runtime's file (default); postgres: the workers' tables",
    )
    listing = dlq_sub.add_parser("list", help="newest dead letters first", parents=[which])
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = dlq_sub.add_parser(
        "show", help="one dead letter, with its body and traceback", parents=[which]
    )
    show.add_argument("id")
    redrive = dlq_sub.add_parser(
        "redrive", help="send dead letters again and run them", parents=[which]
    )
    redrive.add_argument("ids", nargs="*", metavar="ID")
    redrive.add_argument("--all", action="store_true", help="redrive every dead letter")
    redrive.add_argument("--no-run", action="store_true", help="queue only; do not run now")
    dlq.set_defaults(func=cmd_dlq)

    run_cmd = sub.add_parser(
        "run",
        help="run a team on a task, printing the conversation",
        epilog='examples:\n  cadre run "Plan a three-day trip to Lisbon"\n'
        '  cadre run --team review "Write a two-line welcome for new hires"\n'
        '  cadre run --continue TASK_ID "Make it four days"\n'
        "`cadre teams` lists the teams; CADRE_MODEL=offline:1 makes each offline reply take 1 s",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run_cmd.add_argument(
        "task", help="what the team should do (with --continue: the user's next message)"
    )
    run_cmd.add_argument("--team", default="default", help="the team's name (default: default)")
    run_cmd.add_argument(
        "--continue",
        dest="continue_id",
        metavar="TASK_ID",
        help="run this finished task again, with its whole history and TASK as your message",
    )
    run_cmd.add_argument("--state", dest="run_state", help="the SQLite file")
    run_cmd.set_defaults(func=cmd_run)
    resume = sub.add_parser("resume", help="continue an interrupted task from the store")
    resume.add_argument("task_id")
    resume.add_argument("--state", dest="run_state", help="the SQLite file")
    for command in (run_cmd, resume):
        command.add_argument("--trace", metavar="PATH", help="write the spans to PATH (JSONL)")
    resume.set_defaults(func=cmd_resume)

    serve = sub.add_parser("serve", help="serve the HTTP API and the live page (port 7071)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7071, help="port (default: 7071)")
    serve.add_argument(
        "--insecure-no-key", action="store_true",
        help="serve a non-loopback --host without CADRE_API_KEY (refused otherwise)",
    )  # fmt: skip
    serve.add_argument("--state", dest="serve_state", help="the SQLite file")
    serve.add_argument("--app", dest="serve_app", help="app modules (overrides CADRE_APP)")
    serve.add_argument(
        "--transport", dest="serve_transport", choices=("local", "rabbitmq"), default="local",
        help="local (in-process runtime, default) or rabbitmq (submit to `cadre worker`s)",
    )  # fmt: skip
    serve.add_argument(
        "--store", dest="serve_store", choices=("sqlite", "postgres"), default="sqlite",
        help="sqlite (default, with --transport local) or postgres (with rabbitmq)",
    )  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="consume RabbitMQ and run steps on PostgreSQL")
    worker.add_argument("--partitions", type=int, help="overrides CADRE_PARTITIONS")
    worker.add_argument("--concurrency", type=int, help="overrides CADRE_CONCURRENCY")
    worker.add_argument(
        "--health-port", type=int, help="serve /livez, /readyz, /status (CADRE_HEALTH_PORT)"
    )
    worker.set_defaults(func=cmd_worker)
    db = sub.add_parser("db", help="PostgreSQL schema of the workers' store")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db_sub.add_parser("migrate", help="create the tables (idempotent)")
    db.set_defaults(func=cmd_db)

    schema = sub.add_parser("schema", help="export or check the committed message/state schemas")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    for action, text in (("export", "write schemas/"), ("check", "fail on breaking changes")):
        schema_sub.add_parser(action, help=text).add_argument(
            "--dir", default="schemas", help="the schemas folder (default: schemas)"
        )
    schema.set_defaults(func=cmd_schema)

    infra = sub.add_parser("infra", help="what the Azure templates in infra/ need from the app")
    infra_sub = infra.add_subparsers(dest="infra_command", required=True, metavar="ACTION")
    types = infra_sub.add_parser("agent-types", help="agent types and their subscriptions (JSON)")
    types.add_argument("--write", metavar="PATH", help="write the JSON to PATH")
    types.add_argument("--check", metavar="PATH", help="exit 1 when PATH is not up to date")
    infra.set_defaults(func=cmd_infra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cadre` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.state:
            settings = settings.replace(local__state_path=Path(args.state))
        if args.app:
            settings = settings.replace(app_modules=tuple(args.app.split(",")))
        if args.command == "dlq" and args.dlq_command == "redrive" and not (args.ids or args.all):
            parser.error("dlq redrive needs IDs or --all")
        return int(args.func(args, settings))
    except CadreError as exc:
        print(f"cadre: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # bad ids, bad JSON payloads
        print(f"cadre: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
