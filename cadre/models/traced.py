"""Model and tool calls with their spans and token metrics (GenAI semantic conventions).

    result = await traced.create(client, messages, tools=specs, agent_type="writer")
    outcome = await traced.call_tool(tool, call, agent_name="writer")

Every model call in the teams goes through `create`: a ``chat <model>`` CLIENT span with
the provider, the request and response model, the finish reason and the token counts,
and ``gen_ai.client.token.usage`` per agent and model. Prompts and completions (and tool
arguments and results) are recorded only when content capture is on
(``CADRE_TRACE_CONTENT=true``). With no OpenTelemetry SDK these are plain calls.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode
from pydantic import BaseModel

from .. import telemetry
from .base import LLMMessage, ModelClient, ModelResult, ToolCall, ToolSpec
from .tools import Tool, ToolOutcome

_PROVIDERS = {"openai": "openai", "azure-openai": "az.ai.openai", "openai-compatible": "openai"}


def describe(client: ModelClient) -> tuple[str, str]:
    """The ``gen_ai.system`` and the request model of a client: from its ``provider`` and
    ``model`` attributes when it has them, else from its label (``azure-openai:gpt-4o``)."""
    label = client.model_name
    kind, sep, rest = label.partition(":")
    provider = getattr(client, "provider", None) or (_PROVIDERS.get(kind, kind) if sep else label)
    model = getattr(client, "model", None)
    return str(provider), str(model) if isinstance(model, str) and model else (rest or label)


async def create(
    client: ModelClient,
    messages: list[LLMMessage],
    *,
    tools: list[ToolSpec] | None = None,
    output_schema: type[BaseModel] | None = None,
    agent_type: str | None = None,
    agent_name: str | None = None,
) -> ModelResult:
    """`client.create(...)` inside a ``chat <model>`` span, its tokens counted."""
    tel = telemetry.current()
    provider, model = describe(client)
    with tel.model_span(
        model, agent_type=agent_type, agent_name=agent_name, provider=provider
    ) as span:
        recording = span.is_recording()
        if recording and tel.capture_content:
            span.set_attribute("gen_ai.input.messages", _messages_json(messages))
        result = await client.create(messages, tools=tools, output_schema=output_schema)
        if recording:
            span.set_attribute("gen_ai.response.model", result.model or model)
            span.set_attribute("gen_ai.response.finish_reasons", (result.finish_reason,))
            if tel.capture_content:
                span.set_attribute("gen_ai.output.messages", _result_json(result))
        tel.record_tokens(
            span,
            model=model,
            input_tokens=result.usage.prompt_tokens,
            output_tokens=result.usage.completion_tokens,
            agent_type=agent_type,
            agent_name=agent_name,
            provider=provider,
            response_model=result.model or model,
        )
    return result


async def call_tool(tool: Tool, call: ToolCall, *, agent_name: str | None = None) -> ToolOutcome:
    """`tool.call(arguments)` inside an ``execute_tool <name>`` span."""
    with tool_span(call, agent_name=agent_name) as span:
        outcome = await tool.call(call.arguments)
        finish_tool_span(span, call, outcome)
    return outcome


def tool_span(call: ToolCall, *, agent_name: str | None = None) -> AbstractContextManager[Span]:
    """The ``execute_tool`` span of one tool call (also for hand-offs and unknown tools)."""
    return telemetry.current().tool_span(call.name, call_id=call.id, agent_name=agent_name)


def finish_tool_span(span: Span, call: ToolCall, outcome: ToolOutcome) -> None:
    """Mark a failed tool call, and record arguments and result when content is captured."""
    if not span.is_recording():
        return
    if outcome.is_error:
        span.set_attribute("error.type", "tool_error")
        span.set_status(Status(StatusCode.ERROR, outcome.content[:500]))
    if telemetry.current().capture_content:
        span.set_attribute("gen_ai.tool.call.arguments", call.arguments[:8192])
        span.set_attribute("gen_ai.tool.call.result", outcome.content[:8192])


def _messages_json(messages: list[LLMMessage]) -> str:
    return json.dumps([m.model_dump(mode="json", exclude_defaults=True) for m in messages])[:8192]


def _result_json(result: ModelResult) -> str:
    output: dict[str, Any] = {
        "role": "assistant",
        "content": result.content,
        "finish_reason": result.finish_reason,
    }
    if result.tool_calls:
        output["tool_calls"] = [c.model_dump(mode="json") for c in result.tool_calls]
    return json.dumps([output])[:8192]
