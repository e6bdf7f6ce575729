"""The SERVER span of each HTTP request to the API: the root of a task submitted in it.

`ServerSpans` is plain ASGI middleware (`cadre.api.create_app` adds it). The span is
named ``<METHOD> <route>`` (``POST /api/tasks``) and is current while the app handles the
request, so the task's first envelope carries it as its parent: one trace from the request
through every step, in every process. A request that carries a W3C ``traceparent``
continues the caller's trace; under a host that runs the request inside its own span
(Azure Functions), the span is that one's child. With tracing off it passes the request
through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import current

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_propagator = TraceContextTextMapPropagator()


def fastapi_options() -> dict[str, Any]:
    """Keyword arguments for ``FastAPI(...)``: a FastAPI that traces requests itself
    (``telemetry=``) leaves that to `ServerSpans` (one SERVER span, the same on every
    FastAPI release); its HTTP metrics stay on."""
    import inspect

    from fastapi import FastAPI

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "operation_spans": False}}


class ServerSpans:
    """ASGI middleware: one SERVER span per HTTP request (see the module)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tel = current()
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        tel.refresh()
        if not tel.tracing:
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        carrier = _w3c_headers(scope)
        parent = _propagator.extract(carrier) if carrier else otel_context.get_current()
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": str(scope.get("path", "")),
            "url.scheme": str(scope.get("scheme", "http")),
        }
        server = scope.get("server")
        if server and server[0]:
            attributes["server.address"] = str(server[0])
            attributes["server.port"] = int(server[1] or 0)
        span = tel.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
            raise
        finally:
            otel_context.detach(token)
            route = getattr(scope.get("route"), "path", None)
            if isinstance(route, str) and route:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()


def _w3c_headers(scope: Scope) -> dict[str, str]:
    """The request's ``traceparent`` and ``tracestate`` headers, if any."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        if name in (b"traceparent", b"tracestate"):
            found[name.decode("latin-1")] = value.decode("latin-1")
    return found
