"""A stand-in for the Azure Functions host: a FunctionRpc ``EventStream`` server (grpcio) that
starts the real Python worker and drives it as the host does.

    host = FunctionsHost(worker_python, app_dir, env=..., generated=...)
    host.start()        # StartStream -> WorkerInitRequest -> FunctionsMetadataRequest
                        #   -> FunctionLoadRequest per function
    await host.http("GET", "api/health")                    # InvocationRequest, HTTP trigger
    await host.invoke_service_bus("agent_notebook", message)  # InvocationRequest, Service Bus
    host.stop()         # WorkerTerminate, then the process ends

The server runs on its own thread and event loop, so one worker serves every test of a
session whatever event loop the test runs in; the coroutines above may be awaited from any
loop. The same server answers the worker's Service Bus sends (``ServiceBusLoopback``), which
`on_batch` receives. What the host sends is built by `encoding`; what the worker answers is
read back from the generated messages.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import encoding, protos

PROXY = Path(__file__).resolve().parent / "proxy_worker.py"
HOST_VERSION = "4.1040.0"
"""What the stand-in tells the worker it is (a Functions 4.x host)."""

T = TypeVar("T")


class WorkerFailed(RuntimeError):
    """The worker refused a request (init, indexing, load) or went away; the message says
    what it answered."""


@dataclass(frozen=True)
class Function:
    """One function as the worker indexed it: its id and the bindings it reported."""

    name: str
    function_id: str
    bindings: list[dict[str, Any]]

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger binding (the one whose type ends in ``Trigger``)."""
        return next(b for b in self.bindings if b["type"].endswith("Trigger"))


@dataclass(frozen=True)
class Invocation:
    """What the worker answered to one InvocationRequest."""

    function: str
    invocation_id: str
    succeeded: bool
    error: str | None
    return_value: Any
    seconds: float


@dataclass(frozen=True)
class HttpResult:
    """An HTTP function's response, as the host would send it to the client."""

    status: int
    headers: dict[str, str]
    body: bytes
    invocation: Invocation

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body) if self.body else None


@dataclass
class Timings:
    """Cold start, as the host sees it (seconds)."""

    process_to_start_stream: float | None = None
    worker_init: float | None = None
    metadata: float | None = None
    load: float | None = None
    first_invocation: float | None = None
    first_invocation_function: str | None = None


@dataclass
class _Stream:
    """The one EventStream of the worker: what goes out, what is awaited."""

    outgoing: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: dict[tuple[str, str], asyncio.Future[Any]] = field(default_factory=dict)
    closed: bool = False


class FunctionsHost:
    """The host stand-in (see the module docstring)."""

    def __init__(
        self,
        worker_python: Path,
        app_dir: Path,
        *,
        generated: Path,
        env: Mapping[str, str],
        on_batch: Callable[[str, list[Any]], str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.worker_python, self.app_dir, self.generated = worker_python, app_dir, generated
        self.env = dict(env)
        self.on_batch = on_batch or (lambda topic, messages: "")
        self.start_timeout = start_timeout
        self.pb, self.rpc, self.loop_pb, self.loop_rpc = protos.load(generated)
        self.functions: dict[str, Function] = {}
        self.logs: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=2000)
        self.timings = Timings()
        self.worker_init_response: Any = None
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._stream = _Stream()
        self._ids = itertools.count(1)
        self._invocations = 0

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Serve, start the worker, and initialise, index and load its functions;
        `WorkerFailed` (with the worker's own error) when any of that fails."""
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Ask the worker to end (WorkerTerminate), wait for it, stop serving."""
        if self._thread.is_alive():
            try:
                self._call(self._stop(), timeout=30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _on_host_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the host's loop from any caller's loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _start(self) -> None:
        import grpc

        self._stream = _Stream()
        self._server = grpc.aio.server()
        self.rpc.add_FunctionRpcServicer_to_server(_EventStream(self), self._server)
        self.loop_rpc.add_ServiceBusLoopbackServicer_to_server(_Loopback(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        started = time.perf_counter()
        self.process = self._spawn()
        await self._wait(self._stream.started.wait(), "StartStream")
        self.timings.process_to_start_stream = time.perf_counter() - started
        await self._initialise()

    def _spawn(self) -> subprocess.Popen[bytes]:
        pythonpath = [str(self.generated), *self.env.get("PYTHONPATH", "").split(os.pathsep)]
        env = {
            **self.env,
            "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p),
            "CADRE_STANDIN_LOOPBACK": f"127.0.0.1:{self.port}",
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "AzureWebJobsScriptRoot": str(self.app_dir),
        }
        args = [str(self.worker_python), str(PROXY), "--host", "127.0.0.1"]
        args += ["--port", str(self.port), "--workerId", str(uuid.uuid4())]
        args += ["--requestId", str(uuid.uuid4())]
        return subprocess.Popen(args, cwd=self.app_dir, env=env, stdin=subprocess.DEVNULL)

    async def _wait(self, awaitable: Awaitable[T], what: str) -> T:
        """Await `awaitable`, failing fast when the worker process exits."""
        task = asyncio.ensure_future(awaitable)
        deadline = time.monotonic() + self.start_timeout
        while not task.done():
            if self.process is not None and self.process.poll() is not None:
                task.cancel()
                raise WorkerFailed(
                    f"the worker exited (code {self.process.returncode}) before {what}; "
                    f"its last logs: {self.recent_logs()}"
                )
            if time.monotonic() > deadline:
                task.cancel()
                raise WorkerFailed(f"no {what} within {self.start_timeout:.0f} s")
            await asyncio.wait({task}, timeout=0.1)
        return task.result()

    async def _request(self, key: tuple[str, str], **content: Any) -> Any:
        """Send one StreamingMessage and await the response matched by `key`."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stream.waiting[key] = future
        request_id = str(next(self._ids))
        await self._stream.outgoing.put(self.pb.StreamingMessage(request_id=request_id, **content))
        return await self._wait(future, key[0])

    async def _initialise(self) -> None:
        pb = self.pb
        started = time.perf_counter()
        init = await self._request(
            ("worker_init_response", ""),
            worker_init_request=pb.WorkerInitRequest(
                host_version=HOST_VERSION,
                function_app_directory=str(self.app_dir),
                worker_directory=str(PROXY.parent),
            ),
        )
        self.timings.worker_init = time.perf_counter() - started
        self.worker_init_response = init
        _check(init.result, "WorkerInitRequest (indexing function_app.py)")
        started = time.perf_counter()
        metadata = await self._request(
            ("function_metadata_response", ""),
            functions_metadata_request=pb.FunctionsMetadataRequest(
                function_app_directory=str(self.app_dir)
            ),
        )
        self.timings.metadata = time.perf_counter() - started
        _check(metadata.result, "FunctionsMetadataRequest")
        started = time.perf_counter()
        for fn in metadata.function_metadata_results:
            loaded = await self._request(
                ("function_load_response", fn.function_id),
                function_load_request=pb.FunctionLoadRequest(
                    function_id=fn.function_id, metadata=fn
                ),
            )
            _check(loaded.result, f"FunctionLoadRequest of {fn.name}")
            bindings = [json.loads(raw) for raw in fn.raw_bindings]
            self.functions[fn.name] = Function(fn.name, fn.function_id, bindings)
        self.timings.load = time.perf_counter() - started

    async def _stop(self) -> None:
        if self.process is not None and self.process.poll() is None and not self._stream.closed:
            await self._stream.outgoing.put(
                self.pb.StreamingMessage(worker_terminate=self.pb.WorkerTerminate())
            )
            for _ in range(100):
                if self.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
        await self._stream.outgoing.put(None)
        if self._server is not None:
            await self._server.stop(grace=1)

    # -- what the stream receives -----------------------------------------------------

    def _received(self, message: Any) -> None:
        kind = message.WhichOneof("content")
        if kind == "start_stream":
            self._stream.started.set()
        elif kind == "rpc_log":
            log = message.rpc_log
            self.logs.append((log.level, log.category, log.message))
        elif kind in ("worker_init_response", "function_metadata_response"):
            self._resolve((kind, ""), getattr(message, kind))
        elif kind == "function_load_response":
            self._resolve(
                (kind, message.function_load_response.function_id), message.function_load_response
            )
        elif kind == "invocation_response":
            response = message.invocation_response
            self._resolve((kind, response.invocation_id), response)

    def _resolve(self, key: tuple[str, str], value: Any) -> None:
        future = self._stream.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(value)

    def recent_logs(self, count: int = 20) -> list[str]:
        """The worker's last log messages (warnings and errors first)."""
        worst = sorted(self.logs, key=lambda log: -log[0])[:count]
        return [f"{category}: {message}" for _, category, message in worst]

    # -- invocations ------------------------------------------------------------------

    async def invoke(
        self,
        function: str,
        inputs: Mapping[str, Any],
        trigger_metadata: Mapping[str, Any],
        *,
        trace_parent: str = "",
    ) -> Invocation:
        """One InvocationRequest; the worker's answer (it never raises for a failed one)."""
        return await self._on_host_loop(
            self._invoke(function, inputs, trigger_metadata, trace_parent)
        )

    async def _invoke(
        self,
        function: str,
        inputs: Mapping[str, Any],
        trigger_metadata: Mapping[str, Any],
        trace_parent: str,
    ) -> Invocation:
        pb, fn = self.pb, self.functions[function]
        invocation_id = str(uuid.uuid4())
        request = pb.InvocationRequest(
            invocation_id=invocation_id,
            function_id=fn.function_id,
            input_data=[pb.ParameterBinding(name=n, data=d) for n, d in inputs.items()],
            trigger_metadata=trigger_metadata,
            trace_context=pb.RpcTraceContext(trace_parent=trace_parent),
            retry_context=pb.RetryContext(),
        )
        started = time.perf_counter()
        response = await self._request(
            ("invocation_response", invocation_id), invocation_request=request
        )
        seconds = time.perf_counter() - started
        self._invocations += 1
        if self._invocations == 1:
            self.timings.first_invocation = seconds
            self.timings.first_invocation_function = function
        succeeded = response.result.status == pb.StatusResult.Success
        error = None if succeeded else response.result.exception.message
        value = response.return_value if response.HasField("return_value") else None
        return Invocation(function, invocation_id, succeeded, error, value, seconds)

    async def http(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        raw: bytes | None = None,
        function: str = "http_api",
    ) -> HttpResult:
        """A request to an HTTP function through the worker (its route is ``{*path}``)."""
        fn = self.functions[function]
        content = (
            raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        )
        all_headers = {"content-type": "application/json", **(headers or {})}
        if content:
            all_headers["content-length"] = str(len(content))
        data = encoding.http_request(
            self.pb,
            method,
            f"http://localhost:7071/{path}",
            headers=all_headers,
            body=content,
            route_params={"path": path.partition("?")[0]},
        )
        meta = encoding.metadata(self.pb, {"sys": encoding.sys_metadata(function)})
        invocation = await self.invoke(function, {fn.trigger["name"]: data}, meta)
        if not invocation.succeeded:
            return HttpResult(500, {}, b"", invocation)
        http = invocation.return_value.http
        kind = http.body.WhichOneof("data")
        payload = getattr(http.body, kind) if kind else b""
        payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        return HttpResult(int(http.status_code or 200), dict(http.headers), payload, invocation)

    async def invoke_service_bus(
        self, function: str, message: encoding.ReceivedMessage, *, trace_parent: str = ""
    ) -> Invocation:
        """A Service Bus trigger invocation for `message`, encoded as the extension sends it."""
        fn = self.functions[function]
        data, meta = encoding.service_bus_trigger(self.pb, message, function)
        return await self.invoke(
            function, {fn.trigger["name"]: data}, meta, trace_parent=trace_parent
        )


def _check(result: Any, what: str) -> None:
    if result.status != 1:  # StatusResult.Success
        raise WorkerFailed(f"{what} failed: {result.exception.message}")


class _EventStream:
    """The FunctionRpc service: one bidirectional stream with the worker."""

    def __init__(self, host: FunctionsHost) -> None:
        self.host = host

    async def EventStream(self, request_iterator: Any, context: Any) -> Any:
        stream = self.host._stream

        async def read() -> None:
            async for message in request_iterator:
                self.host._received(message)
            stream.closed = True

        reader = asyncio.ensure_future(read())
        try:
            while True:
                message = await stream.outgoing.get()
                if message is None:
                    return
                yield message
        finally:
            reader.cancel()


class _Loopback:
    """The worker's Service Bus sends, handed to `FunctionsHost.on_batch`."""

    def __init__(self, host: FunctionsHost) -> None:
        self.host = host

    async def SendBatch(self, request: Any, context: Any) -> Any:
        error = self.host.on_batch(request.topic, list(request.messages))
        return self.host.loop_pb.SendResult(error=error or "")


__all__ = ["Function", "FunctionsHost", "HttpResult", "Invocation", "Timings", "WorkerFailed"]
