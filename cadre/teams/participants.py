"""Participants: an assistant (model + tools), a user proxy, and any custom agent.

    writer = Assistant("writer", system_message="You are a travel writer.", tools=[search])
    user = UserProxy("user")

A participant spec is configuration in code; its agent (one per task) keeps the model
conversation in the store. Any agent with a handler for `RequestTurn` that replies a
`TurnResult` can join a team through `Participant(name, agent_type)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..agent import Agent, handler
from ..context import Context
from ..errors import ConfigurationError
from ..ids import AgentId
from ..models import traced
from ..models.base import LLMMessage, ModelClient, ModelResult, ToolSpec, Usage
from ..models.context import ModelContext, TokenLimited, context_window, history_budget
from ..models.tools import Tool, ToolOutcome, as_tool
from ..registry import Registry, default_registry
from .messages import ChatMessage, RequestTurn, TurnResult


class Participant:
    """A member of a team: a name the team uses, and the agent type that plays it."""

    def __init__(self, name: str, agent_type: str | None = None, description: str = "") -> None:
        self.name = name
        self.agent_type = agent_type or name
        self.description = description or name
        AgentId(self.agent_type, "check")

    def agent_id(self, key: str) -> AgentId:
        """The agent that plays this participant in the team run keyed `key`."""
        return AgentId(self.agent_type, key)

    def register(self, registry: Registry | None = None) -> Any:
        """Register what this participant needs (a custom agent registers itself)."""


class Transfer(BaseModel):
    """A hand-off an assistant may make (AutoGen's ``Handoff``): a tool named `name`
    (default ``transfer_to_<target>``) that passes the turn to `target`, answering `message`
    to the model (default: AutoGen's wording)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    name: str = ""
    description: str = ""
    message: str = ""

    def model_post_init(self, context: Any) -> None:
        defaults = {
            "name": f"transfer_to_{self.target}",
            "description": f"Handoff to {self.target}.",
            "message": f"Transferred to {self.target}, adopting the role of {self.target} "
            "immediately.",
        }
        for field, value in defaults.items():
            if not getattr(self, field):
                object.__setattr__(self, field, value)


class Assistant(Participant):
    """A model-backed participant: system message, model, tools, optional reflection.

    `handoffs` (swarm) are target names or `Transfer`s; each becomes a tool (by default
    ``transfer_to_<name>``). `model_client` is accepted as AutoGen's name for `model`. Without
    `reflect_on_tool_use`, the tool results are the turn's answer; with it, the model is
    called again to answer from them. `model_context` decides which part of the
    conversation is stored and sent (`cadre.models.context`; default `TokenLimited()`: the
    newest messages that fit in the model's context window).
    """

    def __init__(
        self,
        name: str,
        *,
        system_message: str = "You are a helpful assistant.",
        model: ModelClient | None = None,
        tools: Sequence[Callable[..., Any] | Tool] = (),
        description: str = "",
        reflect_on_tool_use: bool = False,
        handoffs: Sequence[str | Transfer] = (),
        max_tool_iterations: int = 3,
        model_context: ModelContext | None = None,
        agent_type: str | None = None,
        model_client: ModelClient | None = None,
    ) -> None:
        super().__init__(name, agent_type, description or system_message.split(".")[0])
        if model is not None and model_client is not None:
            raise ConfigurationError(f"assistant {name!r}: give model= or model_client=, not both")
        self.system_message = system_message
        self._model = model or model_client
        self.tools = {t.name: t for t in map(as_tool, tools)}
        self.reflect_on_tool_use = reflect_on_tool_use
        self.transfers = {
            t.name: t
            for t in (h if isinstance(h, Transfer) else Transfer(target=h) for h in handoffs)
        }
        self.handoffs = [t.target for t in self.transfers.values()]
        self.max_tool_iterations = max_tool_iterations
        self.model_context: ModelContext = (
            model_context if model_context is not None else TokenLimited()
        )

    @property
    def model(self) -> ModelClient:
        """The model client (default: the one CADRE_MODEL names, offline if unset)."""
        if self._model is None:
            from ..models import client_from_spec
            from ..settings import Settings

            self._model = client_from_spec(Settings.from_env().model)
        return self._model

    def tool_specs(self) -> list[ToolSpec]:
        """The tools the model is offered, hand-offs included."""
        specs = [t.spec for t in self.tools.values()]
        for transfer in self.transfers.values():
            specs.append(
                ToolSpec(
                    name=transfer.name,
                    description=transfer.description,
                    parameters={"type": "object", "properties": {}},
                )
            )
        return specs

    def register(self, registry: Registry | None = None) -> Any:
        """Register this assistant's agent type (a configured `AssistantAgent`)."""
        registry = registry if registry is not None else default_registry
        return registry.register(
            AssistantAgent, type=self.agent_type, factory=lambda i, s: AssistantAgent(i, s, self)
        )


class UserProxy(Participant):
    """A human: its turn parks the team in ``awaiting_input`` until `HumanInput` arrives."""

    def __init__(self, name: str = "user", *, prompt: str = "Your input:", **kwargs: Any) -> None:
        super().__init__(name, description=kwargs.pop("description", "a human user"), **kwargs)
        self.prompt = prompt

    def register(self, registry: Registry | None = None) -> Any:
        """Register this proxy's agent type."""
        registry = registry if registry is not None else default_registry
        return registry.register(
            UserProxyAgent, type=self.agent_type, factory=lambda i, s: UserProxyAgent(i, s, self)
        )


class AssistantState(BaseModel):
    """An assistant's model conversation in one task (what its context policy keeps), and
    the tokens it used."""

    history: list[LLMMessage] = []
    usage: Usage = Usage()
    skipped: int = 0
    """Messages the context policy has dropped from `history` in this task."""


_NAME = re.compile(r"[^A-Za-z0-9_-]")


class AssistantAgent(Agent):
    """Plays an `Assistant`: one model call per step, tool calls in the same step."""

    State = AssistantState

    def __init__(self, agent_id: AgentId, state: BaseModel, spec: Assistant) -> None:
        super().__init__(agent_id, state)
        self.spec = spec

    @handler
    async def turn(self, msg: RequestTurn, ctx: Context) -> TurnResult:
        """Answer one turn: the model, then its tool calls, up to `max_tool_iterations`.

        The context policy trims the conversation before each model call and before the
        state is stored, so each step's work depends on what it keeps, not on the task.
        """
        history: list[LLMMessage] = self.state.history
        for message in msg.messages:
            history.append(
                LLMMessage(
                    role="user", content=message.content, name=_NAME.sub("_", message.source)
                )
            )
        if msg.instruction:
            history.append(LLMMessage(role="user", content=msg.instruction))
        try:
            return await self._answer(msg.turn)
        finally:
            self._trim()

    async def _answer(self, turn: int) -> TurnResult:
        out: list[ChatMessage] = []
        for _ in range(self.spec.max_tool_iterations + 1):
            try:
                result = await self._call_model()
            except Exception as exc:  # the client retried already; the task fails with why
                error = f"{self.spec.name}: model call failed: {type(exc).__name__}: {exc}"
                return TurnResult(turn=turn, messages=out, error=error)
            history: list[LLMMessage] = self.state.history
            if not result.tool_calls:
                history.append(LLMMessage(role="assistant", content=result.content))
                out.append(self._message(result.content, result.usage))
                return TurnResult(turn=turn, messages=out)
            handoff, outcomes = await self._run_tools(result, history, out)
            if handoff:
                return TurnResult(turn=turn, messages=out, handoff=handoff)
            if not self.spec.reflect_on_tool_use:
                text = "\n".join(o.content for o in outcomes)
                history.append(LLMMessage(role="assistant", content=text))
                out.append(self._message(text, Usage()))
                return TurnResult(turn=turn, messages=out)
        text = f"stopped after {self.spec.max_tool_iterations} rounds of tool calls"
        out.append(self._message(text, Usage()))
        return TurnResult(turn=turn, messages=out)

    def _trim(self) -> None:
        """Keep only what the context policy keeps, counting what it dropped."""
        history: list[LLMMessage] = self.state.history
        kept = self.spec.model_context.keep(history, context_window=self._budget())
        self.state.skipped += len(history) - len(kept)
        self.state.history = kept

    def _budget(self) -> int:
        window = context_window(self.spec.model)
        return history_budget(window, self._system(), self.spec.tool_specs())

    def _system(self) -> LLMMessage:
        return LLMMessage(role="system", content=self.spec.system_message)

    async def _call_model(self) -> ModelResult:
        self._trim()
        policy = self.spec.model_context
        history = policy.prompt(self.state.history, skipped=self.state.skipped)
        result = await traced.create(
            self.spec.model,
            [self._system(), *history],
            tools=self.spec.tool_specs() or None,
            agent_type=self.id.type,
            agent_name=self.spec.name,
        )
        self.state.usage = self.state.usage + result.usage
        return result

    async def _run_tools(
        self, result: ModelResult, history: list[LLMMessage], out: list[ChatMessage]
    ) -> tuple[str | None, list[ToolOutcome]]:
        history.append(
            LLMMessage(role="assistant", content=result.content, tool_calls=result.tool_calls)
        )
        calls = json.dumps([c.model_dump() for c in result.tool_calls])
        out.append(self._message(calls, result.usage, kind="tool_call"))
        handoff: Transfer | None = None
        outcomes = []
        for call in result.tool_calls:
            transfer = self.spec.transfers.get(call.name)
            with traced.tool_span(call, agent_name=self.spec.name) as span:
                if transfer is not None:
                    handoff = handoff or transfer
                    outcome = ToolOutcome(transfer.message)
                elif (tool := self.spec.tools.get(call.name)) is not None:
                    outcome = await tool.call(call.arguments)
                else:
                    outcome = ToolOutcome(f"there is no tool named {call.name!r}", is_error=True)
                traced.finish_tool_span(span, call, outcome)
            outcomes.append(outcome)
            history.append(LLMMessage(role="tool", content=outcome.content, tool_call_id=call.id))
            out.append(
                ChatMessage(
                    source=self.spec.name,
                    content=outcome.content,
                    kind="tool_result",
                    tool_name=call.name,
                    is_error=outcome.is_error,
                )
            )
        if handoff is None:
            return None, outcomes
        out.append(  # AutoGen's HandoffMessage: the transfer's message, for the target
            ChatMessage(
                source=self.spec.name,
                content=handoff.message,
                kind="handoff",
                handoff=handoff.target,
            )
        )
        return handoff.target, outcomes

    def _message(self, content: str, usage: Usage, kind: str = "text") -> ChatMessage:
        return ChatMessage(source=self.spec.name, content=content, usage=usage, kind=kind)  # type: ignore[arg-type]


class UserProxyAgent(Agent):
    """Plays a `UserProxy`: asks for input and parks; the answer goes to the manager."""

    def __init__(self, agent_id: AgentId, state: BaseModel, spec: UserProxy) -> None:
        super().__init__(agent_id, state)
        self.spec = spec

    @handler
    async def turn(self, msg: RequestTurn, ctx: Context) -> TurnResult:
        """Ask the human: the team waits in ``awaiting_input`` (nothing runs meanwhile)."""
        prompt = msg.instruction or self.spec.prompt
        return TurnResult(turn=msg.turn, awaiting_input=True, prompt=prompt)
