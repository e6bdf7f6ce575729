"""The API's request and response bodies (they are its OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..models.base import Usage
from ..teams.manager import TaskStatus
from ..teams.messages import MessageKind


def _storable(text: str) -> str:
    """Every store holds the text: no U+0000 (PostgreSQL refuses it) and no lone surrogate
    (JSON can spell one as ``\\ud800``; it has no UTF-8 form, so no store can write it)."""
    if "\x00" in text:
        raise ValueError("must not contain U+0000 (NUL)")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"must be valid unicode (a lone surrogate at character {exc.start})"
            ) from None
    return text


Text = Annotated[str, AfterValidator(_storable)]
"""A client's text: any Unicode string but U+0000 and lone surrogates (422)."""


class TaskOptions(BaseModel):
    """Per-task settings. None is defined yet: an unknown key is a 422, not ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskRequest(BaseModel):
    """`POST /api/tasks`: which team, and what it should do."""

    model_config = ConfigDict(extra="forbid")

    team: Text = Field(default="default", min_length=1, max_length=200, examples=["default"])
    task: Text = Field(min_length=1, examples=["Plan a three-day trip to Lisbon"])
    options: TaskOptions = TaskOptions()


class InputRequest(BaseModel):
    """`POST /api/tasks/{id}/input`: the human's answer to the user proxy."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(min_length=1, examples=["Yes, go ahead."])


class ContinueRequest(BaseModel):
    """`POST /api/tasks/{id}/messages`: the user's next message to a finished task."""

    model_config = ConfigDict(extra="forbid")

    text: Text | None = Field(
        None,
        min_length=1,
        examples=["Now make it shorter."],
        description="the user's message; leave it out to let the team go on as it was",
    )


class CancelRequest(BaseModel):
    """`POST /api/tasks/{id}/cancel` (the body is optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: Text = Field(default="cancelled by the client", max_length=500)


class Accepted(BaseModel):
    """A request the task's manager will act on at its next step."""

    task_id: str
    status: TaskStatus = Field(
        description="the task's status as of this response; the request takes effect at "
        "the manager's next step"
    )
    status_url: str
    messages_url: str


class TaskView(BaseModel):
    """`GET /api/tasks/{id}`: a task as a client sees it."""

    task_id: str
    team: str
    status: TaskStatus
    task: str
    result: str | None
    error: str | None = Field(description="why the task failed (status failed), else null")
    stop_reason: str | None = Field(description="why the task ended, once it has")
    speaker: str | None = Field(description="the participant whose turn it is")
    prompt: str | None = Field(description="the user proxy's question (awaiting_input)")
    messages: int = Field(description="transcript length")
    usage: Usage
    usage_by_agent: dict[str, Usage]
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None


class MessageView(BaseModel):
    """One transcript entry; `index` counts from 0."""

    index: int
    source: str
    content: str
    kind: MessageKind
    tokens: int
    usage: Usage
    tool_name: str | None = None
    is_error: bool = False
    handoff: str | None = None
    at: datetime | None = None
    via: str | None = Field(None, description="the nested team that relayed this message")


class MessagePage(BaseModel):
    """`GET /api/tasks/{id}/messages`: up to `limit` messages after `after`."""

    task_id: str
    status: TaskStatus
    messages: list[MessageView]
    next_after: int = Field(description="pass as `after` to get the messages that follow")
    has_more: bool


ParticipantKind = Literal["assistant", "user_proxy", "team", "agent"]


class Participant(BaseModel):
    """One member of a team."""

    name: str
    kind: ParticipantKind
    description: str


class TeamView(BaseModel):
    """A team this app serves."""

    name: str
    pattern: str
    description: str
    participants: list[Participant]
    termination: str | None = Field(
        default=None, description="its termination condition, as code (null: none)"
    )
    model: str = Field(
        default="none", description="the model its assistants use (``offline`` by default)"
    )


class Check(BaseModel):
    """One dependency's health."""

    ok: bool
    detail: str


class Health(BaseModel):
    """`GET /api/health`: 200 when every check passes, 503 otherwise."""

    status: Literal["ok", "degraded"]
    checks: dict[str, Check]


class DeadLetterView(BaseModel):
    """An envelope that could not be handled."""

    id: str
    reason: str
    detail: str
    failed_at: datetime
    attempts: int
    agent: str | None
    message: str | None
    task_id: str | None
    body: Any = Field(description="the envelope as JSON (or text when it is not JSON)")


class Redriven(BaseModel):
    """A dead letter sent again."""

    id: str
    envelope_id: str
    agent: str
