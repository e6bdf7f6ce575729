"""The model port: one async protocol every model client implements.

    result = await client.create(messages, tools=tools, output_schema=Plan)

A client turns a conversation (`LLMMessage`s) into one `ModelResult`: text, tool calls,
token usage and why the model stopped. Model calls happen inside handlers; the step
persists what they produced, so after a crash before the save the model is called again:
model calls are at-least-once, their effects (messages, state) exactly-once.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict


class Usage(BaseModel):
    """Tokens one model call (or a sum of calls) consumed."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class ToolCall(BaseModel):
    """The model asks to call tool `name` with JSON `arguments`."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = "{}"


class LLMMessage(BaseModel):
    """One message of a model conversation (OpenAI chat roles)."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


FinishReason = Literal["stop", "tool_calls", "length", "content_filter", "unknown"]


class ModelResult(BaseModel):
    """What one model call produced."""

    model_config = ConfigDict(frozen=True)

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = Usage()
    finish_reason: FinishReason = "stop"
    model: str = ""


class ToolSpec(BaseModel):
    """What a model is told about one tool: its name, description and JSON-schema parameters."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    parameters: dict[str, Any]


@runtime_checkable
class ModelClient(Protocol):
    """A chat model. `create` must not keep per-conversation state between calls."""

    @property
    def model_name(self) -> str:
        """A label for the model (``offline``, ``gpt-4o``, ``azure-openai:my-deployment``)."""
        ...

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """One completion. With `output_schema`, `content` is JSON valid for that model.

        Raises `cadre.errors.ModelError` when the model cannot answer (after retries).
        """
        ...
