"""Termination conditions: when a team run stops. Serialisable, combinable with | and &.

    stop = TextMention(text="APPROVE") | MaxMessages(max_messages=10)

Each condition is a frozen pydantic model with a `kind`, so a combination is plain data in
the manager's stored state (a discriminated union); unknown arguments are refused, so a
misspelt limit fails at construction instead of never firing. A condition is checked
after every turn and sees only what is new since it last looked (`RunView.new`), plus the
run's counters: its cost does not depend on how long the task has run. What a condition
must remember between checks lives in `RunView.memo` (stored with the manager's state):
``a & b`` remembers which side has fired. `MaxMessages` counts every message of the run,
the task included.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ..models.base import Usage
from .messages import ChatMessage


@dataclass(frozen=True)
class RunView:
    """What conditions look at: the messages new since the last check, how many messages
    the run holds with them (`count`: the first of a run's messages is its task), the run's
    usage, external signals, and `memo`, the conditions' own stored memory."""

    new: Sequence[ChatMessage]
    count: int
    usage: Usage = field(default_factory=Usage)
    timed_out: bool = False
    stop_requested: bool = False
    memo: MutableMapping[str, str] = field(default_factory=dict)

    def replies(self) -> Sequence[ChatMessage]:
        """The new messages but the run's task (the run's first message)."""
        first = self.count - len(self.new)
        return self.new[1:] if first == 0 else self.new


class _Condition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def check(self, run: RunView) -> str | None:
        """The reason this condition fired, or None."""
        return self._check(run, "")

    def _check(self, run: RunView, path: str) -> str | None:
        """`check`, for the condition at `path` in a combination (its key in `run.memo`)."""
        raise NotImplementedError

    def __or__(self, other: _Condition) -> AnyOf:
        return AnyOf(conditions=[self, other])  # type: ignore[list-item]

    def __and__(self, other: _Condition) -> AllOf:
        return AllOf(conditions=[self, other])  # type: ignore[list-item]


class MaxMessages(_Condition):
    """Stop once the run holds `max_messages` messages (the task message included)."""

    kind: Literal["max_messages"] = "max_messages"
    max_messages: int = Field(ge=1)

    def _check(self, run: RunView, path: str) -> str | None:
        if run.count >= self.max_messages:
            return f"maximum of {self.max_messages} messages reached"
        return None


class TextMention(_Condition):
    """Stop when a text message (from `sources`, if given) contains `text`."""

    kind: Literal["text_mention"] = "text_mention"
    text: str
    sources: list[str] | None = None

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.replies():
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

    def _check(self, run: RunView, path: str) -> str | None:
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

    def _check(self, run: RunView, path: str) -> str | None:
        return f"timed out after {self.seconds:g} s" if run.timed_out else None


class External(_Condition):
    """Stop after the current turn once `Tasks.stop(task_id)` was called."""

    kind: Literal["external"] = "external"

    def _check(self, run: RunView, path: str) -> str | None:
        return "stopped externally" if run.stop_requested else None


class Handoff(_Condition):
    """Stop when a participant hands off to `target` (e.g. ``user``)."""

    kind: Literal["handoff"] = "handoff"
    target: str

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.kind == "handoff" and message.handoff == self.target:
                return f"{message.source} handed off to {self.target}"
        return None


class SourceMatch(_Condition):
    """Stop once any of `sources` has spoken."""

    kind: Literal["source_match"] = "source_match"
    sources: list[str]

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.replies():
            if message.source in self.sources and message.kind == "text":
                return f"{message.source} answered"
        return None


class FunctionCall(_Condition):
    """Stop once tool `function_name` ran successfully."""

    kind: Literal["function_call"] = "function_call"
    function_name: str

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
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

    def _check(self, run: RunView, path: str) -> str | None:
        reasons = (c._check(run, f"{path}.{i}") for i, c in enumerate(self.conditions))
        return next((r for r in reasons if r), None)


class AllOf(_Condition):
    """Stop once every condition has fired in this run (``a & b``), not necessarily at the
    same check: which ones fired is remembered in the run's memo."""

    kind: Literal["all_of"] = "all_of"
    conditions: list[Condition]

    def _check(self, run: RunView, path: str) -> str | None:
        reasons = []
        for i, condition in enumerate(self.conditions):
            key = f"{path}.{i}"
            reason = run.memo.get(key) or condition._check(run, key)
            if reason:
                run.memo[key] = reason
            reasons.append(reason)
        if not all(reasons):
            return None
        for i in range(len(self.conditions)):  # fired: the next run starts afresh
            run.memo.pop(f"{path}.{i}", None)
        return "; ".join(reasons)  # type: ignore[arg-type]


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
