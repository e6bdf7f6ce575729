"""Tools: plain Python functions a model may call, described from their signatures.

    def get_weather(city: str, days: int = 1) -> str:
        "The forecast for `city`."
        ...

    tool = Tool.from_function(get_weather)
    tool.spec          # name, description (the docstring), JSON-schema parameters (pydantic)
    await tool.call('{"city": "Lisbon"}')   # -> ToolOutcome(content=..., is_error=False)

Plain functions run in a worker thread, coroutine functions on the event loop.
A failing call (bad JSON, invalid arguments, an exception in the function) becomes a tool
result with ``is_error=True`` that the model reads, never a crash of the agent.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError, create_model

from .base import ToolSpec


@dataclass(frozen=True)
class ToolOutcome:
    """The text a tool call returned to the model, and whether it is an error."""

    content: str
    is_error: bool = False


@dataclass(frozen=True)
class Tool:
    """A callable tool: its spec for the model and the function behind it."""

    name: str
    description: str
    fn: Callable[..., Any]
    arguments: type[BaseModel]

    @classmethod
    def from_function(
        cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None
    ) -> Tool:
        """A tool from a (sync or async) function with annotated parameters."""
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {fn.__name__}: *args/**kwargs cannot be described")
            default = ... if param.default is param.empty else param.default
            fields[param.name] = (hints.get(param.name, str), default)
        model = create_model(f"{fn.__name__}_arguments", **fields)
        doc = inspect.getdoc(fn) or ""
        return cls(name or fn.__name__, description or doc, fn, model)

    @property
    def spec(self) -> ToolSpec:
        """What the model is told about this tool."""
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, parameters=schema)

    async def call(self, arguments: str) -> ToolOutcome:
        """Validate the JSON arguments and call the function; errors become error outcomes."""
        try:
            raw = json.loads(arguments or "{}")
            parsed = self.arguments.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            return ToolOutcome(f"invalid arguments for {self.name}: {exc}", is_error=True)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(**dict(parsed))
            else:  # a blocking function must not stall the runtime's event loop
                result = await asyncio.to_thread(self.fn, **dict(parsed))
        except Exception as exc:  # the model reads the error and may try again
            return ToolOutcome(f"{self.name} failed: {type(exc).__name__}: {exc}", is_error=True)
        if isinstance(result, BaseModel):
            return ToolOutcome(result.model_dump_json())
        return ToolOutcome(result if isinstance(result, str) else json.dumps(result, default=str))


def as_tool(fn: Callable[..., Any] | Tool) -> Tool:
    """`fn` as a `Tool` (a `Tool` is returned unchanged)."""
    return fn if isinstance(fn, Tool) else Tool.from_function(fn)
