"""The HTTP API: one FastAPI app, the same under `cadre serve` and Azure Functions.

Routes live under ``/api``; the live page is served at ``/``. Every error is a problem
details object (see `_problems`). The app does not own the runtime: the host starts and
stops it (`cadre.hosts.serve`, the Functions app).
"""

from __future__ import annotations

import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BeforeValidator
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..errors import ConfigurationError, DeliveryError, NotFound
from ..registry import Registry
from ..runtime import Runtime
from ..stores.base import DeadLetter
from ..teams.manager import TaskStatus
from ..teams.tasks import TaskInfo
from ..telemetry.http import ServerSpans, fastapi_options
from ._models import (
    Accepted,
    CancelRequest,
    ContinueRequest,
    DeadLetterView,
    Health,
    InputRequest,
    MessagePage,
    Redriven,
    TaskRequest,
    TaskView,
    TeamView,
)
from ._problems import (
    PROBLEM_JSON,
    BodyLimit,
    CatchAll,
    HeadAsGet,
    Problem,
    ProblemError,
    install,
)
from ._service import Service
from ._stream import events, message_view

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_TASK_CHARS = 20_000

# The page loads only its own files and shows every text as text: no inline script, no
# framing, no sniffing.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _digits(value: Any) -> Any:
    """Query numbers are written in plain digits: pydantic alone would take ``5.0``,
    `` 5``, ``+5`` or ``1_0``, which no client means."""
    if isinstance(value, str) and not re.fullmatch(r"0|[1-9][0-9]{0,15}", value):
        raise ValueError("must be a whole number written in digits")
    return value


DIGITS = BeforeValidator(_digits)

ID_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,199}$"
TaskId = Annotated[str, PathParam(pattern=ID_PATTERN, description="the task id")]
LetterId = Annotated[str, PathParam(pattern=ID_PATTERN, description="the dead letter id")]


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or wrong x-api-key",
        404: "no such task, team or dead letter",
        409: "the task is not in a state that allows this (or the Idempotency-Key was used "
        "for another request)",
        413: "the request or its text is over the size limit",
        422: "the request is invalid (the problem names the field)",
        503: "a dependency failed",
    }
    ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
    return {
        code: {"description": described[code], "content": {PROBLEM_JSON: ref}} for code in codes
    }


def create_app(
    runtime: Runtime,
    *,
    api_key: str | None = None,
    max_task_chars: int | None = None,
    admin: bool = True,
    registry: Registry | None = None,
    poll_seconds: float = 0.25,
    heartbeat_seconds: float = 15.0,
    stream_max_seconds: float | None = None,
) -> FastAPI:
    """The API over `runtime` (any host's, `cadre.runtime.Runtime`; see `cadre.api`).

    `api_key`: every route but health needs it in ``x-api-key``. `max_task_chars`: the
    longest task or input text (413 beyond). `admin`: serve the dead-letter routes.
    `registry`: where teams are registered (default: the runtime's).
    `poll_seconds`, `heartbeat_seconds`: how often a live stream reads the store and sends a
    keep-alive comment. `stream_max_seconds`: close a live stream after this long (the
    client reconnects and resumes); set it where the host buffers or caps responses.
    """
    limit = max_task_chars or DEFAULT_MAX_TASK_CHARS
    service = Service(runtime, registry or runtime.registry)
    app = FastAPI(
        title="Cadre",
        version=__version__,
        description="Submit tasks to teams of agents, follow them live, answer, cancel.",
        openapi_url=None,  # served below, behind the key like every other route
        docs_url=None,  # no browser for it: Swagger UI would come from a CDN
        redoc_url=None,
        **fastapi_options(),  # requests are traced by ServerSpans
    )
    install(app)
    guard = _key_guard(check_api_key(api_key))
    common = _problems(401, 422, 503) if api_key else _problems(422, 503)
    api = APIRouter(prefix="/api", dependencies=guard, responses=common)
    stream = _StreamOptions(poll_seconds, heartbeat_seconds, stream_max_seconds)
    _task_routes(api, service, limit, stream)
    _team_routes(api, service)
    if admin:
        _admin_routes(api, service, runtime)
    _openapi_route(api, app)
    app.include_router(api)
    _health_route(app, service)
    _page_routes(app)
    app.state.cadre = service
    _document_problems(app)
    # Added last is outermost: CatchAll wraps everything, and BodyLimit refuses a body over
    # the limit before any route parses it.
    app.add_middleware(BodyLimit, max_bytes=limit * 6 + 16_384)
    app.add_middleware(HeadAsGet)
    app.add_middleware(CatchAll)
    app.add_middleware(ServerSpans)  # outermost: each request's SERVER span, a task's root
    return app


def _document_problems(app: FastAPI) -> None:
    """Put the `Problem` schema into the OpenAPI components (the error responses refer to
    it, but no route returns it as its model, so FastAPI would leave it out)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            _, found = models_json_schema(
                [(Problem, "serialization")], ref_template="#/components/schemas/{model}"
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(found.get("$defs", {}))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def check_api_key(api_key: str | None) -> str | None:
    """The key, if a client can send it: printable ASCII without surrounding blanks (an HTTP
    header carries nothing else; curl cannot send the rest). `ConfigurationError` if not."""
    if api_key and not (api_key.isascii() and api_key.isprintable() and api_key == api_key.strip()):
        raise ConfigurationError(
            "CADRE_API_KEY must be printable ASCII without leading or trailing blanks (an "
            "x-api-key header can carry nothing else); choose another key"
        )
    return api_key


def _openapi_route(api: APIRouter, app: FastAPI) -> None:
    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())


def _key_guard(api_key: str | None) -> list[Any]:
    if not api_key:
        return []
    header = APIKeyHeader(name="x-api-key", auto_error=False, description="CADRE_API_KEY")

    # A default, not an Annotated hint: hints are strings here and `header` is a local.
    async def check(given: str | None = Security(header)) -> None:
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ProblemError(
                401,
                "unauthorized",
                "Unauthorized",
                "send the API key in the x-api-key header" if given is None else "wrong API key",
            )

    return [Depends(check)]


def _accepted(request: Request, task_id: str, status: TaskStatus) -> Accepted:
    url = request.url_for("get_task", task_id=task_id).path
    return Accepted(task_id=task_id, status=status, status_url=url, messages_url=f"{url}/messages")


@dataclass(frozen=True)
class _StreamOptions:
    poll: float
    heartbeat: float
    max_seconds: float | None


def _task_routes(api: APIRouter, service: Service, limit: int, stream: _StreamOptions) -> None:
    def check_size(field: str, text: str) -> None:
        if len(text) > limit:
            raise ProblemError(
                413,
                "text-too-large",
                "Text too large",
                f"{field} has {len(text)} characters; the limit is {limit} (CADRE_MAX_TASK_CHARS)",
            )

    @api.post(
        "/tasks",
        status_code=202,
        response_model=Accepted,
        responses=_problems(404, 409, 413),
        summary="Submit a task to a team",
    )
    async def submit_task(
        body: TaskRequest,
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=255,
                description="retrying with the same key and body returns the same task",
            ),
        ] = None,
    ) -> JSONResponse:
        check_size("body.task", body.task)
        task_id, replayed = await service.submit(body.team, body.task, idempotency_key)
        accepted = _accepted(request, task_id, "queued")
        if replayed:
            accepted.status = (await service.state(task_id)).status
        headers = {"Location": accepted.status_url}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)

    @api.get(
        "/tasks/{task_id}",
        response_model=TaskView,
        responses=_problems(404),
        summary="A task's status, result, usage and timestamps",
    )
    async def get_task(task_id: TaskId) -> TaskView:
        st = await service.state(task_id)
        submitted = await service.submission(task_id)
        return TaskView(
            **TaskInfo.of(task_id, st).model_dump(),
            error=st.stop_reason if st.status == "failed" else None,
            submitted_at=submitted.submitted_at if submitted else st.started_at,
        )

    @api.get(
        "/tasks/{task_id}/messages",
        response_model=MessagePage,
        responses={
            200: {
                "description": "a page of messages, or with `Accept: text/event-stream` a "
                "live stream of `message`, `status` and `end` events",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            **_problems(404),
        },
        summary="The transcript, paged or live (server-sent events)",
    )
    async def get_messages(
        task_id: TaskId,
        request: Request,
        after: Annotated[int, Query(ge=0, le=MAX_INDEX, description="skip this many"), DIGITS] = 0,
        limit: Annotated[int, Query(ge=1, le=500), DIGITS] = 100,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", include_in_schema=False)
        ] = None,
    ) -> Any:
        st = await service.state(task_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            if last_event_id is not None:
                after = _event_id(last_event_id)
            live = events(
                service,
                task_id,
                after,
                poll=stream.poll,
                heartbeat=stream.heartbeat,
                max_seconds=stream.max_seconds,
            )
            return StreamingResponse(
                live,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        window = await service.messages(task_id, after, limit)
        return MessagePage(
            task_id=task_id,
            status=st.status,
            messages=[message_view(after + i, m) for i, m in enumerate(window)],
            next_after=after + len(window),
            has_more=after + len(window) < st.messages,
        )

    @api.post(
        "/tasks/{task_id}/messages",
        status_code=202,
        response_model=Accepted,
        responses=_problems(404, 409, 413),
        summary="Continue a finished task with the user's next message",
        description="The task runs again with its whole history: the next speaker is chosen "
        "as the team's pattern would (round-robin: the next in order; swarm: the agent the "
        "last hand-off named) and the termination conditions start afresh. 409 while the "
        "task is queued, running or awaiting input.",
    )
    async def continue_task(
        task_id: TaskId, request: Request, body: ContinueRequest | None = None
    ) -> Accepted:
        text = body.text if body is not None else None
        if text is not None:
            check_size("body.text", text)
        await service.continue_task(task_id, text)
        return _accepted(request, task_id, (await service.state(task_id)).status)

    @api.post(
        "/tasks/{task_id}/input",
        status_code=202,
        response_model=Accepted,
        responses=_problems(404, 409, 413),
        summary="Answer the user proxy of a task awaiting input",
    )
    async def give_input(task_id: TaskId, body: InputRequest, request: Request) -> Accepted:
        check_size("body.text", body.text)
        await service.give_input(task_id, body.text)
        return _accepted(request, task_id, "awaiting_input")

    @api.post(
        "/tasks/{task_id}/cancel",
        status_code=202,
        response_model=Accepted,
        responses=_problems(404, 409),
        summary="Cancel a task that has not finished",
    )
    async def cancel_task(
        task_id: TaskId, request: Request, body: CancelRequest | None = None
    ) -> Accepted:
        await service.cancel(task_id, (body or CancelRequest()).reason)
        return _accepted(request, task_id, (await service.state(task_id)).status)


def _team_routes(api: APIRouter, service: Service) -> None:
    @api.get("/teams", response_model=list[TeamView], summary="The teams and their participants")
    async def list_teams() -> list[TeamView]:
        return service.teams()


def _admin_routes(api: APIRouter, service: Service, runtime: Runtime) -> None:
    @api.get(
        "/dead-letters",
        response_model=list[DeadLetterView],
        summary="Dead letters, newest first (admin)",
        tags=["admin"],
    )
    async def list_dead_letters(
        limit: Annotated[int, Query(ge=1, le=1000), DIGITS] = 50,
    ) -> list[DeadLetterView]:
        return [_letter_view(d) for d in await service.store.list_dead_letters(limit=limit)]

    @api.post(
        "/dead-letters/{letter_id}/redrive",
        status_code=202,
        response_model=Redriven,
        responses=_problems(404),
        summary="Send a dead letter again and remove it from the list (admin)",
        tags=["admin"],
    )
    async def redrive_dead_letter(letter_id: LetterId) -> Redriven:
        try:
            envelope = await runtime.redrive(letter_id)
        except NotFound:
            detail = f"no dead letter {letter_id!r}"
            raise ProblemError(
                404, "dead-letter-not-found", "Dead letter not found", detail
            ) from None
        except DeliveryError as exc:  # its bytes are not an envelope: nothing to send again
            raise ProblemError(
                409,
                "dead-letter-not-redrivable",
                "Dead letter cannot be redriven",
                f"dead letter {letter_id!r} cannot be sent again ({exc.reason}): {exc}; "
                "inspect it and delete it, or send a corrected message",
            ) from None
        return Redriven(
            id=letter_id,
            envelope_id=envelope.id,
            agent=envelope.recipient or "",
        )


SHOWN_BODY_CHARS = 65_536
"""The most of a dead letter's raw body a view shows when it is not readable JSON."""


def _letter_view(letter: DeadLetter) -> DeadLetterView:
    """Any stored bytes can be shown: JSON as JSON; anything else (not JSON, nested deeper
    than the parser goes) as text, shortened past `SHOWN_BODY_CHARS` and said so."""
    try:
        body: Any = json.loads(letter.body)
    except (ValueError, RecursionError):
        text = letter.body.decode("utf-8", errors="replace")
        if len(text) > SHOWN_BODY_CHARS:
            text = (
                f"{text[:SHOWN_BODY_CHARS]}... [{len(text) - SHOWN_BODY_CHARS:,} more characters]"
            )
        body = text
    return DeadLetterView(
        id=letter.id,
        reason=letter.reason,
        detail=letter.detail,
        failed_at=letter.failed_at,
        attempts=letter.attempts,
        agent=letter.agent,
        message=letter.message,
        task_id=letter.task_id,
        body=body,
    )


MAX_INDEX = 10**15
"""The largest message number the API takes (a transcript has no limit but storage)."""


def _event_id(value: str) -> int:
    """A ``Last-Event-ID`` as this API writes it (the message number); 422 otherwise."""
    if not (value.isascii() and value.isdigit() and len(value) <= 16):
        raise ProblemError(
            422,
            "invalid-request",
            "Invalid request",
            "header Last-Event-ID: must be a message number this stream sent (ASCII digits)",
        )
    return min(int(value), MAX_INDEX)


def _health_route(app: FastAPI, service: Service) -> None:
    @app.get(
        "/api/health",
        response_model=Health,
        responses={503: {"description": "a check failed", "model": Health}},
        summary="Liveness, and a check of the store and the transport (no key needed)",
    )
    async def health() -> JSONResponse:
        checks = await service.health()
        ok = all(c.ok for c in checks.values())
        body = Health(status="ok" if ok else "degraded", checks=checks)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


def _page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", _PageFiles(directory=STATIC), name="static")


class _PageFiles(StaticFiles):
    """The page's files; an HTML one carries the page's headers (its Content-Security-Policy)
    wherever it is served from."""

    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.update(PAGE_HEADERS)
        return response
