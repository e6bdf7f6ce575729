"""Termination conditions: when a team run stops. Serialisable, combinable with | and &.

    stop = TextMention(text="APPROVE") | MaxMessages(max_messages=10)

Each condition is a frozen pydantic model with a `kind`, so a combination is plain data in
the manager's stored state (a discriminated union). A condition is checked after every
message against the run so far (`RunView`) and returns the reason it fired, or None.
`MaxMessages` counts every message of the run, the task included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..models.base import Usage
from .messages import ChatMessage


@dataclass(frozen=True)
class RunView:
    """What conditions look at: the run's messages and usage, and external signals."""

    messages: Sequence[ChatMessage]
    usage: Usage
    timed_out: bool = False
    stop_requested: bool = False


class _Condition(BaseModel):
    model_config = ConfigDict(frozen=True)

    def check(self, run: RunView) -> str | None:
        """The reason this condition fired, or None."""
        raise NotImplementedError

    def __or__(self, other: _Condition) -> AnyOf:
        return AnyOf(conditions=[self, other])  # type: ignore[list-item]

    def __and__(self, other: _Condition) -> AllOf:
        return AllOf(conditions=[self, other])  # type: ignore[list-item]


class MaxMessages(_Condition):
    """Stop once the run holds `max_messages` messages (the task message included)."""

    kind: Literal["max_messages"] = "max_messages"
    max_messages: int = Field(ge=1)

    def check(self, run: RunView) -> str | None:
        if len(run.messages) >= self.max_messages:
            return f"maximum of {self.max_messages} messages reached"
        return None


class TextMention(_Condition):
    """Stop when a text message (from `sources`, if given) contains `text`."""

    kind: Literal["text_mention"] = "text_mention"
    text: str
    sources: list[str] | None = None

    def check(self, run: RunView) -> str | None:
        for message in run.messages[1:]:
            if message.kind != "text" or (self.sources and message.source not in self.sources):
                continue
            if self.text in message.content:
                return f"{message.source} mentioned {self.text!r}"
        return None


class TokenUsage(_Condition):
    """Stop once the run used this many tokens (any limit given)."""

    kind: Literal["token_usage"] = "token_usage"
    max_total_tokens: int | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None

    def check(self, run: RunView) -> str | None:
        used = run.usage
        limits = (
            (self.max_total_tokens, used.total_tokens, "total"),
            (self.max_prompt_tokens, used.prompt_tokens, "prompt"),
            (self.max_completion_tokens, used.completion_tokens, "completion"),
        )
        for limit, value, label in limits:
            if limit is not None and value >= limit:
                return f"{label} token usage {value} reached the limit of {limit}"
        return None


class Timeout(_Condition):
    """Stop `seconds` after the run began (a durable timer, not a sleep)."""

    kind: Literal["timeout"] = "timeout"
    seconds: float = Field(gt=0)

    def check(self, run: RunView) -> str | None:
        return f"timed out after {self.seconds:g} s" if run.timed_out else None


class External(_Condition):
    """Stop after the current turn once `Tasks.stop(task_id)` was called."""

    kind: Literal["external"] = "external"

    def check(self, run: RunView) -> str | None:
        return "stopped externally" if run.stop_requested else None


class Handoff(_Condition):
    """Stop when a participant hands off to `target` (e.g. ``user``)."""

    kind: Literal["handoff"] = "handoff"
    target: str

    def check(self, run: RunView) -> str | None:
        for message in run.messages:
            if message.kind == "handoff" and message.handoff == self.target:
                return f"{message.source} handed off to {self.target}"
        return None


class SourceMatch(_Condition):
    """Stop once any of `sources` has spoken."""

    kind: Literal["source_match"] = "source_match"
    sources: list[str]

    def check(self, run: RunView) -> str | None:
        for message in run.messages[1:]:
            if message.source in self.sources and message.kind == "text":
                return f"{message.source} answered"
        return None


class FunctionCall(_Condition):
    """Stop once tool `function_name` ran successfully."""

    kind: Literal["function_call"] = "function_call"
    function_name: str

    def check(self, run: RunView) -> str | None:
        for message in run.messages:
            if (
                message.kind == "tool_result"
                and message.tool_name == self.function_name
                and not message.is_error
            ):
                return f"function {self.function_name} was called"
        return None


class AnyOf(_Condition):
    """Stop when any condition fires (``a | b``)."""

    kind: Literal["any_of"] = "any_of"
    conditions: list[Condition]

    def check(self, run: RunView) -> str | None:
        return next((r for c in self.conditions if (r := c.check(run))), None)


class AllOf(_Condition):
    """Stop when every condition fires (``a & b``)."""

    kind: Literal["all_of"] = "all_of"
    conditions: list[Condition]

    def check(self, run: RunView) -> str | None:
        reasons = [c.check(run) for c in self.conditions]
        return "; ".join(reasons) if all(reasons) else None  # type: ignore[arg-type]


Condition = Annotated[
    MaxMessages
    | TextMention
    | TokenUsage
    | Timeout
    | External
    | Handoff
    | SourceMatch
    | FunctionCall
    | AnyOf
    | AllOf,
    Field(discriminator="kind"),
]
"""Any termination condition (a discriminated union on `kind`)."""

AnyOf.model_rebuild()
AllOf.model_rebuild()
condition_adapter: TypeAdapter[Condition] = TypeAdapter(Condition)


def timeouts(condition: Condition | None) -> list[float]:
    """The seconds of every `Timeout` inside `condition` (to schedule their timers)."""
    if condition is None:
        return []
    if isinstance(condition, Timeout):
        return [condition.seconds]
    if isinstance(condition, AnyOf | AllOf):
        return [s for c in condition.conditions for s in timeouts(c)]
    return []
