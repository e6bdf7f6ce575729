"""How a worker tells an orchestrator it is alive and ready: a health file rewritten every
few seconds (``health_file``), and an HTTP endpoint (``health_port``) for Kubernetes probes:

    GET /livez    200 while the process's event loop answers
    GET /readyz   200 while the broker connection is open, the worker consumes and is not
                  stopping; 503 otherwise (a body says why)
    GET /status   200, JSON: the health file's fields (with this worker's member id, the
                  members it hears, the partitions assigned to it and how many it released),
                  and per partition whether this worker is its active consumer and the
                  messages ready in its queue (the lag), with the timers waiting in the
                  delay buckets this process declared
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .worker import Worker

HEALTH_EVERY = 2.0
"""Seconds between two writes of the health file."""
READ_TIMEOUT = 5.0
"""Seconds a probe has to send its request line and headers."""


class Health:
    """What a worker says about itself, from its public counters and its transport."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def status(self) -> dict[str, Any]:
        """The health file's fields (see docs/workers.md)."""
        worker = self._worker
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "connected": worker.transport.connected,
            "handled": worker.handled,
            "handled_local": worker.handled_local,
            "handled_together": worker.handled_together,
            "relayed": worker.relayed,
            "in_flight": worker.chains.in_flight,
            "ready": self.not_ready() is None,
            "member": worker.membership.me.id,
            "members": len(worker.membership.live()),
            "assigned": worker.assigned_partitions(),
            "active": [p for p in range(worker.config.partitions) if worker.transport.owns(p)],
            "released": worker.rebalancer.released,
        }

    def not_ready(self) -> str | None:
        """Why the worker is not ready for work (None: it is)."""
        worker = self._worker
        if worker.stopping:
            return "stopping"
        if not worker.transport.connected:
            return "not connected to RabbitMQ"
        return None if worker.consuming else "starting"

    async def partition_status(self) -> dict[str, Any]:
        """`status()` with, per partition, whether this worker is its active consumer and
        the messages ready in its queue; and the timers in this process's delay buckets."""
        transport = self._worker.transport
        depths = await transport.queue_depths()
        partitions = {
            str(p): {"active": transport.owns(p), "ready": depths.pop(transport.queue_name(p))}
            for p in range(transport.partitions)
        }
        return {**self.status(), "partitions": partitions, "timers": sum(depths.values())}

    async def write(self, path: Path) -> None:
        """Write `status()` to `path` every `HEALTH_EVERY` seconds, until cancelled."""
        while True:
            await asyncio.to_thread(path.write_text, json.dumps(self.status()))
            await asyncio.sleep(HEALTH_EVERY)

    async def report(self) -> None:
        """Record `partition_status` as metrics (`Telemetry.record_worker_status`) every
        `HEALTH_EVERY` seconds while telemetry measures, until cancelled. A status the
        broker cannot give now is skipped (the next one comes)."""
        from .. import telemetry

        while True:
            tel = telemetry.current()
            tel.refresh()
            if tel.measuring and self._worker.transport.connected:
                try:
                    status = await self.partition_status()
                except Exception:  # a broker hiccup: the probes and the log say more
                    pass
                else:
                    partitions = {
                        int(p): (part["ready"], part["active"])
                        for p, part in status["partitions"].items()
                    }
                    tel.record_worker_status(partitions, status["in_flight"], status["timers"])
            await asyncio.sleep(HEALTH_EVERY)

    def server(self, host: str, port: int) -> HealthServer:
        """The probe endpoint (not started)."""
        return HealthServer(self.not_ready, self.partition_status, host=host, port=port)


class HealthServer:
    """The probe endpoint: `ready()` says whether (and else why not) the worker is ready;
    `status()` gives the JSON of ``/status``."""

    def __init__(
        self,
        ready: Callable[[], str | None],
        status: Callable[[], Awaitable[dict[str, Any]]],
        *,
        host: str,
        port: int,
    ) -> None:
        self._ready, self._status = ready, status
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (port 0: any free port; `port` then says which)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, _, rest = request.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            code, body = await self._answer(method, path)
        except Exception:  # a probe that hung up or sent nonsense
            code, body = 400, {"error": "bad request"}
        text = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"}
        head = (
            f"HTTP/1.1 {code} {reason.get(code, '')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(text)}\r\nconnection: close\r\n\r\n"
        )
        with contextlib.suppress(Exception):
            writer.write(head.encode() + text)
            await writer.drain()
            writer.close()

    async def _answer(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        if method not in ("GET", "HEAD"):
            return 400, {"error": f"{method} is not served"}
        if path == "/livez":
            return 200, {"live": True}
        if path == "/readyz":
            why = self._ready()
            return (200, {"ready": True}) if why is None else (503, {"ready": False, "why": why})
        if path == "/status":
            return 200, await self._status()
        return 404, {"error": f"no {path}: /livez, /readyz, /status"}
