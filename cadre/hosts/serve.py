"""`cadre serve`: the HTTP API and the live page on the local runtime, with uvicorn.

    cadre serve                      # http://127.0.0.1:7071/  (the port `func start` uses)

The same app (`cadre.api.create_app`) the Functions host serves, over the local runtime
and its SQLite file, so a client written against one works against the other. Ctrl-C (or
SIGTERM) stops accepting requests, lets steps under way finish, and closes the store;
queued work stays in the file for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ..errors import ConfigurationError
from ..settings import Settings


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ModuleNotFoundError:
        from ..errors import ConfigurationError

        raise ConfigurationError(
            "cadre serve needs FastAPI and uvicorn: pip install -e '.[api]'"
        ) from None
    return uvicorn


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(settings: Settings, host: str, insecure_no_key: bool) -> None:
    """Refuse to serve a network address without `CADRE_API_KEY`, unless told to."""
    if not settings.api.key and not insecure_no_key and not is_loopback(host):
        raise ConfigurationError(
            f"cadre serve: --host {host} opens the API to the network, and CADRE_API_KEY is "
            "not set: anyone who can reach it could run tasks and read them. Set "
            "CADRE_API_KEY, or pass --insecure-no-key if the network is yours alone"
        )


async def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    out: TextIO | None = None,
    workers: bool = False,
    insecure_no_key: bool = False,
) -> int:
    """Run the API until a signal stops it; returns the exit code. `workers`: in front of
    `cadre worker` processes (RabbitMQ + PostgreSQL, `cadre.hosts.worker_api`), which run
    the steps, instead of the local runtime. A non-loopback `host` needs an API key, or
    `insecure_no_key` (`ConfigurationError` otherwise); so does a key a client cannot send."""
    check_exposure(settings, host, insecure_no_key)
    uvicorn = _uvicorn()
    from .. import observability

    observability.configure(role="api")  # before the runtime: its steps are traced too
    from ..api import check_api_key, create_app

    api = settings.api
    check_api_key(api.key)
    from ..registry import default_registry
    from ..runtime import Runtime
    from .local import LocalRuntime
    from .worker_api import WorkersRuntime

    out = out or sys.stdout
    runtime: Runtime
    if workers:
        runtime = WorkersRuntime.from_settings(settings, registry=default_registry)
        queue, prefix = settings.workers.queue_name, settings.workers.postgres_prefix
        where = f"workers on RabbitMQ {queue!r}, tables {prefix}*"
        kept = "queued work stays in RabbitMQ for the workers"
    else:
        runtime = LocalRuntime.from_settings(settings)
        where = f"state {settings.local.state_path}"
        kept = "queued work stays in the state file"
    await runtime.start()
    try:
        app = create_app(runtime, api_key=api.key, max_task_chars=api.max_task_chars)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
        )
        server = _Server(config)
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        bind = f"[{shown}]" if ":" in shown else shown
        print(f"cadre serve: {where}", file=out, flush=True)
        print(f"  page      http://{bind}:{port}/", file=out, flush=True)
        print(f"  API       http://{bind}:{port}/api  (/api/openapi.json)", file=out, flush=True)
        if api.key:
            print("  API key   required (x-api-key header)", file=out, flush=True)
        elif not is_loopback(host):
            print("  API key   NONE: open to the network (--insecure-no-key)", file=out, flush=True)
        print(f"Ctrl-C stops ({kept})", file=out, flush=True)
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind
            print(f"cadre serve: could not listen on {host}:{port}", file=sys.stderr)
            return 1
        print("cadre serve: stopped", file=out, flush=True)
        return 0
    finally:
        await runtime.close()


class _Server:
    """A uvicorn server whose Ctrl-C/SIGTERM ends `serve()` and nothing else (uvicorn's
    own handling re-raises the signal afterwards, which would skip the runtime's close)."""

    def __init__(self, config: Any) -> None:
        uvicorn = _uvicorn()

        class Quiet(uvicorn.Server):  # type: ignore[misc, name-defined]
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                loop = asyncio.get_running_loop()
                handled = []
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(sig, self._stop)
                        handled.append(sig)
                try:
                    yield
                finally:
                    for sig in handled:
                        loop.remove_signal_handler(sig)

            def _stop(self) -> None:
                server: Any = self  # a second Ctrl-C stops without waiting for requests
                server.force_exit = bool(server.should_exit)
                server.should_exit = True

        self._server = Quiet(config)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    async def serve(self) -> None:
        await self._server.serve()
