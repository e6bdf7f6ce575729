"""The offline client: the default when no model is configured.

Deterministic, free and clearly labelled: every text it writes starts with ``[offline]``.
It is not a language model, but it follows the contracts every team pattern relies on,
so each pattern runs end to end with no endpoint:

- with hand-off tools (named ``transfer_to_<target>``, a swarm's), it hands off to each
  target once, in the order offered, before doing anything else; then it behaves as if
  they were not there (so a swarm agent passes the turn, and answers when it comes back);
- with other `tools`, it calls the first one (arguments filled from its schema and the
  last request) unless a tool has answered since the last message it was sent, then
  answers once the tool result is in;
- with `output_schema`, it returns JSON valid for it (an enum field, such as a selector's
  speaker, takes the value at ``(messages + offline answers) % len(choices)``, so a
  selector's pick moves on as the conversation grows; a boolean named like
  ``*satisfied*`` turns true once six offline texts are in the conversation);
- a system message that asks for a closing keyword (``APPROVE``, ``TERMINATE``) gets it
  from the agent's second answer on (a tool call counts), so a team's text-mention
  termination fires.

`delay` (``CADRE_MODEL=offline:<seconds>``) makes every reply take that long, like a real
model, so cancelling, the live page and streaming can be tried by hand.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from pydantic import BaseModel

from .base import LLMMessage, ModelResult, ToolCall, ToolSpec
from .replay import word_usage

LABEL = "[offline]"
SATISFIED_AFTER = 6
"""Offline labels in a conversation after which a ``*satisfied*`` field turns true."""
_KEYWORD = re.compile(r"\b(APPROVE|TERMINATE|DONE)\b")
_PERSONA = re.compile(r"\byou are (?:an? |the )?([^.,;\n]+)", re.IGNORECASE)
_ANSWERED = f"{LABEL} As "
"""How every offline text answer starts (a selector's pick moves on with their number)."""
HANDOFF_PREFIX = "transfer_to_"
"""The names of the hand-off tools the offline model uses before any other tool."""


def _snippet(text: str, words: int = 12) -> str:
    parts = text.replace(LABEL, "").split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


class OfflineClient:
    """A deterministic stand-in model (see the module docstring)."""

    provider = "cadre.offline"
    """Its ``gen_ai.system`` on spans and token metrics."""
    context_window = 4_096
    """The tokens an assistant's context policy fits its conversation into by default."""

    delay = 0.0
    """Seconds every reply takes (0: at once)."""

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"the offline model's delay must not be negative, not {delay}")
        self.delay = delay

    @property
    def model_name(self) -> str:
        """Always ``offline``."""
        return "offline"

    async def create(
        self,
        messages: list[LLMMessage],
        tools: list[ToolSpec] | None = None,
        output_schema: type[BaseModel] | None = None,
    ) -> ModelResult:
        """A labelled answer, a tool call, or JSON for `output_schema`."""
        if self.delay:
            await asyncio.sleep(self.delay)
        if output_schema is not None:
            value = _fill(output_schema.model_json_schema(), messages, "")
            content = json.dumps(value)
            return ModelResult(
                content=content, usage=word_usage(messages, content), model="offline"
            )
        request = _last_request(messages)
        tool = _next_tool(messages, tools or [])
        if tool is not None:
            args = _fill(tool.parameters, messages, "", request=request)
            call = ToolCall(
                id=f"offline-{len(messages)}", name=tool.name, arguments=json.dumps(args)
            )
            return ModelResult(
                tool_calls=(call,),
                usage=word_usage(messages, call.arguments),
                finish_reason="tool_calls",
                model="offline",
            )
        content = _answer(messages, request)
        return ModelResult(content=content, usage=word_usage(messages, content), model="offline")


def _next_tool(messages: list[LLMMessage], tools: list[ToolSpec]) -> ToolSpec | None:
    """The tool to call now: a hand-off not yet made, else the first other tool, unless a
    tool has just answered (then the model answers in text)."""
    if not tools or (messages and messages[-1].role == "tool"):
        return None
    made = {c.name for m in messages if m.role == "assistant" for c in m.tool_calls}
    for handoff in (t for t in tools if t.name.startswith(HANDOFF_PREFIX)):
        if handoff.name not in made:
            return handoff
    others = [t for t in tools if not t.name.startswith(HANDOFF_PREFIX)]
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    called = any(m.role == "tool" for m in messages[last_user + 1 :])
    return others[0] if others and not called else None


def _last_request(messages: list[LLMMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user" and message.content:
            return message.content
    return ""


def _answer(messages: list[LLMMessage], request: str) -> str:
    system = next((m.content for m in messages if m.role == "system"), "")
    persona_match = _PERSONA.search(system)
    persona = persona_match.group(1).strip() if persona_match else "an assistant"
    tool_results = [m.content for m in messages if m.role == "tool"]
    task = next((m.content for m in messages if m.role == "user" and m.content), request)
    text = f'{LABEL} As {persona}, on "{_snippet(task)}":'
    if tool_results:
        text += f' the tool answered "{_snippet(tool_results[-1])}".'
    else:
        text += " here is my contribution, a placeholder written without a language model."
    earlier = sum(1 for m in messages if m.role == "assistant" and (m.content or m.tool_calls))
    keyword = _KEYWORD.search(system)
    if keyword and earlier >= 1:
        text += f" {keyword.group(1)}"
    return text


def _fill(
    schema: dict[str, Any],
    messages: list[LLMMessage],
    name: str,
    *,
    request: str = "",
    defs: dict[str, Any] | None = None,
) -> Any:
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return _fill(
            defs[schema["$ref"].rsplit("/", 1)[-1]], messages, name, request=request, defs=defs
        )
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return _fill(schema[key][0], messages, name, request=request, defs=defs)
    if "enum" in schema:
        choices = schema["enum"]
        seen = sum(m.content.count(_ANSWERED) for m in messages if m.role != "system")
        return choices[(len(messages) + seen) % len(choices)]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "string")
    if kind == "object":
        return {
            prop: _fill(sub, messages, prop, request=request, defs=defs)
            for prop, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        return [_fill(schema.get("items", {}), messages, name, request=request, defs=defs)]
    if kind == "boolean":
        answers = sum(m.content.count(LABEL) for m in messages if m.role != "system")
        if "satisfied" in name:
            return answers >= SATISFIED_AFTER
        return "loop" not in name
    if kind in ("integer", "number"):
        return 1
    return f"{LABEL} {_snippet(request, 8) or name.replace('_', ' ')}"
