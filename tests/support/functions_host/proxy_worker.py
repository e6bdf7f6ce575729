"""A minimal proxy worker: what the Functions host starts for a Python 3.13+ app, reduced to
what the real library worker (``azure_functions_runtime``) needs.

The host's own proxy worker is not on PyPI. Like it, this one connects to the host's
FunctionRpc ``EventStream``, sends ``StartStream`` first, and hands every request, unchanged,
to ``azure_functions_runtime`` (``worker_init_request``, ``functions_metadata_request``,
``function_load_request``, ``invocation_request``), wrapped as the proxy wraps it (an object
with ``request``, the `StreamingMessage`, and ``properties``, the generated protos and the
host). It indexes, converts and invokes nothing itself. It also forwards the process's log
records to the host as ``RpcLog`` messages, as the proxy does.

Run by the host stand-in with the worker's Python (3.13):

    python proxy_worker.py --host 127.0.0.1 --port 50051 --workerId W --requestId R

``PYTHONPATH`` holds the generated protos' folder; ``CADRE_STANDIN_WIRING`` (``module:function``)
names a function to call before connecting (the tests' wiring of Cadre's runtime to the local
Cosmos DB server and the Service Bus loopback; production builds it from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any

HANDLERS = {
    "worker_init_request": ("worker_init_request", "worker_init_response"),
    "functions_metadata_request": ("functions_metadata_request", "function_metadata_response"),
    "function_load_request": ("function_load_request", "function_load_response"),
    "invocation_request": ("invocation_request", "invocation_response"),
}
"""Request kind -> (the library worker's handler, the response field of StreamingMessage)."""


@dataclass
class WorkerRequest:
    """What the library worker's handlers take (the proxy's ``WorkerRequest``)."""

    name: str
    request: Any
    properties: dict[str, Any] = field(default_factory=dict)


def load_protos() -> types.SimpleNamespace:
    """The generated message classes as one namespace, as the proxy passes ``protos``."""
    import FunctionRpc_pb2  # generated at test time; on PYTHONPATH

    names = {n: getattr(FunctionRpc_pb2, n) for n in dir(FunctionRpc_pb2) if n[0].isupper()}
    return types.SimpleNamespace(**names)


class _ToHost(logging.Handler):
    """Log records as ``RpcLog`` messages on the stream (the proxy's gRPC logging)."""

    def __init__(self, outgoing: asyncio.Queue[Any], protos: Any, request_id: str) -> None:
        super().__init__(logging.INFO)
        self.outgoing, self.protos, self.request_id = outgoing, protos, request_id

    def filter(self, record: logging.LogRecord) -> bool:
        # The worker's own records and warnings; not every SDK request the app makes.
        return record.levelno >= logging.WARNING or record.name.startswith(
            ("azure.functions", "cadre")
        )

    def emit(self, record: logging.LogRecord) -> None:
        level = min(record.levelno // 10, 5)  # 10 debug .. 50 critical -> 1 .. 5
        log = self.protos.RpcLog(
            level=level,
            message=self.format(record),
            category=record.name,
        )
        message = self.protos.StreamingMessage(request_id=self.request_id, rpc_log=log)
        self.outgoing.put_nowait(message)


async def _handle(library: Any, protos: Any, host: str, message: Any, out: asyncio.Queue) -> None:
    kind = message.WhichOneof("content")
    if kind == "worker_status_request":
        reply = protos.StreamingMessage(
            request_id=message.request_id, worker_status_response=protos.WorkerStatusResponse()
        )
        out.put_nowait(reply)
        return
    if kind not in HANDLERS:
        logging.getLogger("proxy_worker").error("unknown StreamingMessage content: %s", kind)
        return
    handler, response_field = HANDLERS[kind]
    request = WorkerRequest(kind, message, {"protos": protos, "host": host})
    response = await getattr(library, handler)(request)
    out.put_nowait(
        protos.StreamingMessage(request_id=message.request_id, **{response_field: response})
    )


async def serve(args: argparse.Namespace) -> None:
    """Connect, send StartStream, dispatch requests until the host ends the stream."""
    import azure_functions_runtime as library
    import grpc
    from FunctionRpc_pb2_grpc import FunctionRpcStub

    protos = load_protos()
    library.start_threadpool_executor()
    outgoing: asyncio.Queue[Any] = asyncio.Queue()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(_ToHost(outgoing, protos, args.requestId))
    outgoing.put_nowait(
        protos.StreamingMessage(
            request_id=args.requestId, start_stream=protos.StartStream(worker_id=args.workerId)
        )
    )

    async def to_host() -> Any:
        while True:
            message = await outgoing.get()
            if message is None:
                return
            yield message

    limit = args.functions_grpc_max_message_length
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    tasks: set[asyncio.Task[None]] = set()
    async with grpc.aio.insecure_channel(f"{args.host}:{args.port}", options=options) as channel:
        stream = FunctionRpcStub(channel).EventStream(to_host())
        async for message in stream:
            if message.WhichOneof("content") == "worker_terminate":
                break
            task = asyncio.create_task(_handle(library, protos, args.host, message, outgoing))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        outgoing.put_nowait(None)
    library.stop_threadpool_executor()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workerId", required=True)
    parser.add_argument("--requestId", required=True)
    parser.add_argument("--functions-grpc-max-message-length", type=int, default=2**31 - 1)
    args = parser.parse_args()
    wiring = os.environ.get("CADRE_STANDIN_WIRING")
    if wiring:
        module, _, function = wiring.partition(":")
        getattr(importlib.import_module(module), function)()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
