"""Termination conditions: when a team run stops. Serialisable, combinable with | and &.

    stop = TextMention(text="APPROVE") | MaxMessages(max_messages=10)

Each condition is a frozen pydantic model with a `kind`, so a combination is plain data in
the manager's stored state, restored by its kind from a registry (like message contracts):
a condition class of your own joins by subclassing `TerminationCondition` with a new
`kind`. Unknown arguments are refused, naming the closest known one, so a misspelt limit
fails at construction instead of never firing (AutoGen's spellings, such as
``max_total_token``, are accepted as aliases).

A condition is checked after every turn (and once after the run's first messages, the task
included) and sees only what is new since it last looked (`RunView.new`), plus the run's
counters: its cost does not depend on how long the task has run. What a condition must
remember between checks lives in `RunView.memo` (stored with the manager's state, empty at
the start of every run): `MaxMessages` keeps its count there, ``a & b`` which side fired.
The semantics are AutoGen AgentChat's (0.7): see docs/teams.md, "AutoGen → Cadre".
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ..errors import ConfigurationError, ContractError
from ..models.base import Usage
from .messages import ChatMessage

CHAT_KINDS = frozenset({"text", "handoff", "stop", "error"})
"""Message kinds AutoGen calls chat messages; tool calls and tool results are events."""


@dataclass(frozen=True)
class RunView:
    """What conditions look at: the messages new since the last check, how many messages
    the run holds with them (`count`), the run's usage, external signals, and `memo`, the
    conditions' own stored memory for this run."""

    new: Sequence[ChatMessage]
    count: int
    usage: Usage = field(default_factory=Usage)
    timed_out: bool = False
    stop_requested: bool = False
    memo: MutableMapping[str, str] = field(default_factory=dict)


_KINDS: dict[str, type[TerminationCondition]] = {}
"""Every condition class, by its `kind` (what a stored condition names)."""


class TerminationCondition(BaseModel):
    """Base of every condition: a frozen model with a unique ``kind: Literal[...]``.

    Subclass it with a new `kind` and implement `_check` to write your own; it is stored
    and restored by that kind (declare it at module level, imported wherever the team
    runs). `_check` must look only at `run.new` and what it keeps in ``run.memo[path...]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field_info = cls.model_fields.get("kind")
        kind = field_info.default if field_info is not None else None
        if not isinstance(kind, str) or not kind:
            return  # an abstract intermediate class
        known = _KINDS.get(kind)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ContractError(
                f"termination condition kind {kind!r} is taken by {known.__module__}."
                f"{known.__qualname__}; give {cls.__qualname__} another kind"
            )
        _KINDS[kind] = cls

    @model_validator(mode="before")
    @classmethod
    def _known_arguments(cls, data: Any) -> Any:
        """Refuse an unknown argument naming the closest known one (pydantic would only say
        "extra inputs are not permitted")."""
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields)
        for info in cls.model_fields.values():
            alias = info.validation_alias
            if isinstance(alias, AliasChoices):
                known.update(c for c in alias.choices if isinstance(c, str))
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(cls.model_fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"{cls.__name__} has no argument {key!r}{hint} (it takes: "
                    f"{', '.join(sorted(k for k in cls.model_fields if k != 'kind'))})"
                )
        return data

    def check(self, run: RunView) -> str | None:
        """The reason this condition fired, or None."""
        return self._check(run, "")

    def _check(self, run: RunView, path: str) -> str | None:
        """`check`, for the condition at `path` in a combination (its key in `run.memo`)."""
        raise NotImplementedError

    def __or__(self, other: TerminationCondition) -> AnyOf:
        return AnyOf(conditions=[self, other])

    def __and__(self, other: TerminationCondition) -> AllOf:
        return AllOf(conditions=[self, other])


def _parse(value: Any) -> TerminationCondition:
    if isinstance(value, TerminationCondition):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError("a termination condition is an object with a 'kind'")
    cls = _KINDS.get(value["kind"])
    if cls is None:
        raise ValueError(
            f"no termination condition of kind {value['kind']!r} is declared in this process "
            "(import the module that defines it)"
        )
    return cls.model_validate(value)


Condition = Annotated[
    TerminationCondition,
    PlainValidator(_parse),
    PlainSerializer(lambda c: c.model_dump(mode="json"), return_type=dict),
    WithJsonSchema(
        {
            "type": "object",
            "properties": {"kind": {"type": "string"}},
            "required": ["kind"],
            "description": "a termination condition, by its kind (cadre.teams.termination)",
        }
    ),
]
"""Any termination condition, stored by its `kind`."""


class MaxMessages(TerminationCondition):
    """Stop once the run holds `max_messages` chat messages (the task included); tool calls
    and tool results count too with ``include_agent_event=True``."""

    kind: Literal["max_messages"] = "max_messages"
    max_messages: int = Field(ge=1)
    include_agent_event: bool = False

    def _check(self, run: RunView, path: str) -> str | None:
        key = f"{path}#count"
        counted = [m for m in run.new if self.include_agent_event or m.kind in CHAT_KINDS]
        count = int(run.memo.get(key, "0")) + len(counted)
        run.memo[key] = str(count)
        if count >= self.max_messages:
            return f"maximum of {self.max_messages} messages reached"
        return None


class TextMention(TerminationCondition):
    """Stop when a message — the task, a reply, a tool call or result — (from `sources`,
    if given) contains `text`."""

    kind: Literal["text_mention"] = "text_mention"
    text: str
    sources: list[str] | None = None

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if self.sources and message.source not in self.sources:
                continue
            if self.text in message.content:
                return f"{message.source} mentioned {self.text!r}"
        return None


class TextMessage(TerminationCondition):
    """Stop on a text message (from `source`, if given): the task itself is one."""

    kind: Literal["text_message"] = "text_message"
    source: str | None = None

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.kind == "text" and self.source in (None, message.source):
                return f"text message from {message.source}"
        return None


class TokenUsage(TerminationCondition):
    """Stop once the run used this many tokens (any limit given)."""

    kind: Literal["token_usage"] = "token_usage"
    max_total_tokens: int | None = Field(
        None, validation_alias=AliasChoices("max_total_tokens", "max_total_token")
    )
    max_prompt_tokens: int | None = Field(
        None, validation_alias=AliasChoices("max_prompt_tokens", "max_prompt_token")
    )
    max_completion_tokens: int | None = Field(
        None, validation_alias=AliasChoices("max_completion_tokens", "max_completion_token")
    )

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


class Timeout(TerminationCondition):
    """Stop `seconds` after the run began (a durable timer, not a sleep)."""

    kind: Literal["timeout"] = "timeout"
    seconds: float = Field(gt=0, validation_alias=AliasChoices("seconds", "timeout_seconds"))

    def _check(self, run: RunView, path: str) -> str | None:
        return f"timed out after {self.seconds:g} s" if run.timed_out else None


class External(TerminationCondition):
    """Stop after the current turn once `Tasks.stop(task_id)` was called."""

    kind: Literal["external"] = "external"

    def _check(self, run: RunView, path: str) -> str | None:
        return "stopped externally" if run.stop_requested else None


class Handoff(TerminationCondition):
    """Stop when a participant hands off to `target` (e.g. ``user``)."""

    kind: Literal["handoff"] = "handoff"
    target: str

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.kind == "handoff" and message.handoff == self.target:
                return f"{message.source} handed off to {self.target}"
        return None


class SourceMatch(TerminationCondition):
    """Stop once any of `sources` has sent a message (the task's ``user`` included)."""

    kind: Literal["source_match"] = "source_match"
    sources: list[str]

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.source in self.sources and message.kind in CHAT_KINDS:
                return f"{message.source} answered"
        return None


class StopMessage(TerminationCondition):
    """Stop when a participant sends a stop message (a `ChatMessage` of kind ``stop``)."""

    kind: Literal["stop_message"] = "stop_message"

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.kind == "stop":
                return f"{message.source} stopped the run: {message.content}"
        return None


class FunctionCall(TerminationCondition):
    """Stop once tool `function_name` ran (successfully or not, as AutoGen does)."""

    kind: Literal["function_call"] = "function_call"
    function_name: str

    def _check(self, run: RunView, path: str) -> str | None:
        for message in run.new:
            if message.kind == "tool_result" and message.tool_name == self.function_name:
                return f"function {self.function_name} was called"
        return None


_FUNCTIONS: dict[str, Callable[[Sequence[ChatMessage]], bool]] = {}


def termination_function(
    fn: Callable[[Sequence[ChatMessage]], bool],
) -> Callable[[Sequence[ChatMessage]], bool]:
    """Register `fn` (the new messages → stop?) by its qualified name, for
    `FunctionalTermination`; declare it at module level so every process registers it."""
    _FUNCTIONS[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


class FunctionalTermination(TerminationCondition):
    """Stop when `function(new messages)` returns true. Give the function itself (it is
    registered, then stored by its qualified name) or the name of a registered one."""

    kind: Literal["functional"] = "functional"
    function: str

    @field_validator("function", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if callable(value):
            # checks are synchronous, and a stored condition finds its function by name:
            # a coroutine would be truthy at once, lambdas and local functions share names
            if inspect.iscoroutinefunction(value):
                raise ValueError("the function must be synchronous (checks do not await)")
            if "<" in value.__qualname__:
                raise ValueError(
                    f"{value.__qualname__} is not a module-level function: declare it at "
                    "module level, so it has a name of its own that every process registers"
                )
            termination_function(value)
            return f"{value.__module__}.{value.__qualname__}"
        return value

    def _check(self, run: RunView, path: str) -> str | None:
        fn = _FUNCTIONS.get(self.function)
        if fn is None:
            raise ConfigurationError(
                f"termination function {self.function!r} is not registered in this process: "
                "import the module that defines it"
            )
        return f"{self.function} returned true" if run.new and fn(run.new) else None


class AnyOf(TerminationCondition):
    """Stop when any condition fires (``a | b``)."""

    kind: Literal["any_of"] = "any_of"
    conditions: list[Condition]

    def _check(self, run: RunView, path: str) -> str | None:
        reasons = [c._check(run, f"{path}.{i}") for i, c in enumerate(self.conditions)]
        return next((r for r in reasons if r), None)  # every one saw the new messages


class AllOf(TerminationCondition):
    """Stop once every condition has fired in this run (``a & b``), not necessarily at the
    same check: which ones fired is remembered in the run's memo."""

    kind: Literal["all_of"] = "all_of"
    conditions: list[Condition]

    def _check(self, run: RunView, path: str) -> str | None:
        reasons = []
        for i, condition in enumerate(self.conditions):
            key = f"{path}.{i}!fired"
            reason = condition._check(run, f"{path}.{i}")
            if reason and key not in run.memo:
                run.memo[key] = reason
            reasons.append(run.memo.get(key))
        return "; ".join(reasons) if all(reasons) else None  # type: ignore[arg-type]


condition_adapter: TypeAdapter[TerminationCondition] = TypeAdapter(Condition)


def timeouts(condition: TerminationCondition | None) -> list[float]:
    """The seconds of every `Timeout` inside `condition` (to schedule their timers)."""
    if condition is None:
        return []
    if isinstance(condition, Timeout):
        return [condition.seconds]
    if isinstance(condition, AnyOf | AllOf):
        return [s for c in condition.conditions for s in timeouts(c)]
    return []
