"""The contracts a team manager and its participants exchange (all under ``cadre.team.*``).

    client   --StartTask-->    manager (cadre.team/<task id>)
    manager  --RequestTurn-->  participant (<its agent type>/<task id>)
    participant --TurnResult--> manager          (or awaiting_input: a user proxy)
    client   --HumanInput | CancelTask | StopTask--> manager
    client   --ContinueTask--> manager           (a finished task runs again)
    manager  --TimeoutFired--> itself            (a durable timer, when a Timeout applies)

A team that is a participant of another team receives RequestTurn, relays its members'
messages to the outer manager as they come (TurnProgress, under their own sources), and
ends its turn with one TurnResult, like any participant.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..messages import Message
from ..models.base import Usage

MessageKind = Literal["text", "tool_call", "tool_result", "handoff", "stop", "error"]
"""``stop``: a participant ends the run (a `StopMessage` condition fires on it)."""


class ChatMessage(BaseModel):
    """One entry of a team's transcript: who said what, and the tokens it cost."""

    model_config = ConfigDict(frozen=True)

    source: str
    content: str
    kind: MessageKind = "text"
    usage: Usage = Usage()
    tool_name: str | None = None
    is_error: bool = False
    handoff: str | None = None
    at: datetime | None = None
    via: str | None = None
    """The nested team that relayed this message into an outer team's transcript."""


class StartTask(Message, name="cadre.team.StartTask", version=1):
    """Start `team` on `task`; the manager is keyed by the task id."""

    team: str
    task: str


class RequestTurn(Message, name="cadre.team.RequestTurn", version=1):
    """Your turn: `messages` are what others said since your last turn."""

    turn: int
    participant: str
    messages: list[ChatMessage] = []
    instruction: str | None = None


class TurnResult(Message, name="cadre.team.TurnResult", version=1):
    """A participant's answer to `RequestTurn` number `turn`.

    `awaiting_input` parks the team until a `HumanInput` arrives; `error` fails the task.
    """

    turn: int
    messages: list[ChatMessage] = []
    handoff: str | None = None
    awaiting_input: bool = False
    prompt: str | None = None
    error: str | None = None
    usage: Usage = Usage()
    """Tokens the turn spent that no message carries (a nested team's selector calls)."""


class TurnProgress(Message, name="cadre.team.TurnProgress", version=1):
    """A nested team's members' messages of turn `turn`, relayed as they are said."""

    turn: int
    messages: list[ChatMessage] = []


class ContinueTask(Message, name="cadre.team.ContinueTask", version=1):
    """Run a finished (completed, failed, cancelled, turn-limited) task again with its whole
    history: `text`, if given, is the user's next message; the next speaker is chosen as
    the pattern would, and the termination conditions start afresh."""

    text: str | None = None


class HumanInput(Message, name="cadre.team.HumanInput", version=1):
    """The human's answer to a user proxy's request."""

    text: str


class CancelTask(Message, name="cadre.team.CancelTask", version=1):
    """Cancel the task now: status cancelled, later turn results are ignored."""

    reason: str = "cancelled"


class StopTask(Message, name="cadre.team.StopTask", version=1):
    """Ask for a graceful stop: an `External` termination fires after the current turn."""


class TimeoutFired(Message, name="cadre.team.TimeoutFired", version=1):
    """The durable timer of a `Timeout` termination, for run number `run`."""

    run: int
