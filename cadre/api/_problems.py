"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has `type`, `title`, `status` and `detail`; a 422 also lists
each invalid field under `errors`. `install` wires the handlers into an app, and
`CatchAll` is the last line: an unexpected exception becomes a 500 problem with no
internals in it, and the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import StoreError, TransportError, UnstorableValue

log = logging.getLogger("cadre.api")

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:cadre:problem:"
"""Problem types are URNs (identifiers, not links); docs/api.md lists them."""


class FieldError(BaseModel):
    """One invalid part of a request: where it is (``body.task``) and what is wrong."""

    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raised by a route to answer with a problem: `slug` names its type."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.errors = errors
        self.headers = headers


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response."""
    body = Problem(
        type=TYPE_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
    )
    return JSONResponse(
        body.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


_HTTP_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("too-large", "Request too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def _allowed(request: Request) -> str:
    """Every method the API documents for this path (Starlette's 405 names only the first
    route that matched it; a path has one route a method). GET comes with HEAD."""
    import re

    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        table = []
        for path, operations in request.app.openapi().get("paths", {}).items():
            pattern = re.compile("^" + re.sub(r"\\{[^}/]+\\}", "[^/]+", re.escape(path)) + "$")
            methods = {m.upper() for m in operations if m.isalpha()}
            if "GET" in methods:
                methods.add("HEAD")
            table.append((pattern, methods))
        request.app.state.allowed_methods = table
    found = set().union(*(m for p, m in table if p.match(request.url.path)))
    return ", ".join(sorted(found))


def field_errors(errors: Sequence[Any]) -> list[FieldError]:
    """Pydantic/FastAPI validation errors as (field, message) pairs, without the input."""
    found = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        found.append(FieldError(field=".".join(loc) or "body", message=str(error.get("msg"))))
    return found


def install(app: FastAPI) -> None:
    """Answer every error raised inside the app's routes with a problem."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProblemError)
        return problem_response(
            exc.status,
            exc.slug,
            exc.title,
            exc.detail,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        return problem_response(
            422,
            "invalid-request",
            "Invalid request",
            detail or "the request is invalid",
            instance=request.url.path,
            errors=errors,
        )

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:  # FastAPI: a body it cannot decode (not UTF-8, not JSON)
            message = "the body is not valid JSON (UTF-8)"
            return problem_response(
                422,
                "invalid-request",
                "Invalid request",
                f"body: {message}",
                instance=request.url.path,
                errors=[FieldError(field="body", message=message)],
            )
        slug, title = _HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers = {**(headers or {}), "Allow": _allowed(request)}
        return problem_response(
            exc.status_code,
            slug,
            title,
            detail,
            instance=request.url.path,
            headers=headers,
        )

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return problem_response(
            503,
            "unavailable",
            "Service unavailable",
            f"the {'store' if isinstance(exc, StoreError) else 'transport'} is unavailable; "
            "retry shortly",
            instance=request.url.path,
            headers={"Retry-After": "2"},
        )

    async def on_unstorable(request: Request, exc: Exception) -> Response:
        # The store cannot hold a text of the request (the models refuse what they know of)
        return problem_response(
            422,
            "invalid-request",
            "Invalid request",
            f"the store cannot hold this text: {exc}",
            instance=request.url.path,
        )

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(UnstorableValue, on_unstorable)
    app.add_exception_handler(StoreError, on_unavailable)
    app.add_exception_handler(TransportError, on_unavailable)
    app.add_exception_handler(RequestValidationError, on_invalid)
    app.add_exception_handler(HTTPException, on_http)


class CatchAll:
    """ASGI middleware: an exception escaping the app is logged and answered with a bare 500
    problem (when no response has started), so no client ever sees a traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # a stream broke mid-way: the client sees the connection end
            body = json.dumps(
                {
                    "type": TYPE_BASE + "internal",
                    "title": "Internal error",
                    "status": 500,
                    "detail": "the server failed to handle this request; it has been logged",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", PROBLEM_JSON.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is a 413 problem, read no further."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large(scope, send)
                return
        # Read the whole body first (it is small): over the limit, answer 413 before the app
        # sees it; else replay it. Chunked bodies have no Content-Length to check up front.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        response = problem_response(
            413,
            "too-large",
            "Request too large",
            f"the request body is over {self.max_bytes} bytes",
            instance=scope.get("path"),
        )
        await response(scope, _no_receive, send)


class HeadAsGet:
    """ASGI middleware: ``HEAD`` on any path is its ``GET`` without the body (FastAPI's
    routes answer only the methods they declare). A live stream ends once its headers are
    out: the app sees the client leave."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        headers_sent = asyncio.Event()
        asked = False

        async def no_body() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await headers_sent.wait()
            return {"type": "http.disconnect"}

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                headers_sent.set()

        await self.app({**scope, "method": "GET"}, no_body, headers_only)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
