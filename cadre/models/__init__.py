"""Model clients behind one protocol (`ModelClient`), and tools.

`client_from_spec` picks a client from a ``CADRE_MODEL`` value:

| CADRE_MODEL                               | client                                        |
| ----------------------------------------- | --------------------------------------------- |
| ``offline`` (default)                     | `OfflineClient`: deterministic, labelled      |
| ``openai:<model>``                        | OpenAI (OPENAI_API_KEY)                       |
| ``azure-openai:<deployment>``             | Azure OpenAI (key or Entra ID)                |
| ``openai-compatible:<model>@<base_url>``  | Ollama, vLLM, LM Studio, ... by base URL      |

The OpenAI clients load the ``openai`` SDK only when chosen (extra ``cadre[openai]``).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigurationError
from .base import LLMMessage, ModelClient, ModelResult, ToolCall, ToolSpec, Usage
from .offline import OfflineClient
from .replay import ReplayClient
from .tools import Tool, ToolOutcome, as_tool

__all__ = [
    "LLMMessage",
    "ModelClient",
    "ModelResult",
    "OfflineClient",
    "ReplayClient",
    "Tool",
    "ToolCall",
    "ToolOutcome",
    "ToolSpec",
    "Usage",
    "as_tool",
    "client_from_spec",
]


def client_from_spec(spec: str, env: Mapping[str, str] | None = None) -> ModelClient:
    """The model client a ``CADRE_MODEL`` value names (see the module table)."""
    spec = (spec or "offline").strip()
    if spec == "offline":
        return OfflineClient()
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigurationError(
            f"CADRE_MODEL={spec!r}: use offline, openai:<model>, azure-openai:<deployment> or "
            "openai-compatible:<model>@<base_url>"
        )
    if kind not in ("openai", "azure-openai", "openai-compatible"):
        raise ConfigurationError(f"CADRE_MODEL={spec!r}: unknown model kind {kind!r}")
    from .openai import OpenAIClient  # the SDK loads only when a real model is chosen

    return OpenAIClient.from_spec(kind, rest, env)
