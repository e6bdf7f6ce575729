"""The replay client: scripted responses, for tests.

    client = ReplayClient(["Hello", ModelResult(tool_calls=(ToolCall(...),)), "Done"])

Each `create` returns the next response (a string becomes a text result with usage
counted from words) and records the messages it was given in `calls`. A response may also
be a function of the messages. Running out of responses is a `ModelError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from ..errors import ModelError
from .base import LLMMessage, ModelResult, ToolSpec, Usage

Response = str | ModelResult | Exception | Callable[[list[LLMMessage]], Any]


def word_usage(messages: Sequence[LLMMessage], content: str) -> Usage:
    """A deterministic token estimate: whitespace-separated words in and out."""
    prompt = sum(len(m.content.split()) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=len(content.split()))


class ReplayClient:
    """Returns scripted responses in order; `calls` holds what each call was given."""

    provider = "cadre.replay"
    """Its ``gen_ai.system`` on spans and token metrics."""
    context_window = 4_096
    """The tokens an assistant's context policy fits its conversation into (a test may set
    it on the instance)."""

    def __init__(self, responses: Sequence[Response], *, name: str = "replay") -> None:
        self.responses = list(responses)
        self.calls: list[list[LLMMessage]] = []
        self.tools_seen: list[list[ToolSpec] | None] = []
        self._name = name

    @property
    def model_name(self) -> str:
        """The label ``replay`` (or the name given)."""
        return self._name

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """The next scripted response."""
        if len(self.calls) >= len(self.responses):
            raise ModelError(
                f"replay client {self._name!r} ran out of responses after {len(self.calls)} calls"
            )
        response = self.responses[len(self.calls)]
        self.calls.append(list(messages))
        self.tools_seen.append(tools)
        while callable(response) and not isinstance(response, ModelResult | Exception):
            response = response(list(messages))
        if isinstance(response, Exception):
            raise response
        if isinstance(response, ModelResult):
            return response
        return ModelResult(content=response, usage=word_usage(messages, response), model=self._name)
