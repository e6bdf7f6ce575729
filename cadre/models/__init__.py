"""Model clients behind one protocol (`ModelClient`), and tools.

`client_from_spec` picks a client from a ``CADRE_MODEL`` value:

| CADRE_MODEL                               | client                                        |
| ----------------------------------------- | --------------------------------------------- |
| ``offline`` (default)                     | `OfflineClient`: deterministic, labelled      |
| ``offline:<seconds>``                     | the same, each reply taking that long         |
| ``openai:<model>``                        | OpenAI (OPENAI_API_KEY)                       |
| ``azure-openai:<deployment>``             | Azure OpenAI (key or Entra ID)                |
| ``openai-compatible:<model>@<base_url>``  | Ollama, vLLM, LM Studio, ... by base URL      |

The OpenAI clients load the ``openai`` SDK only when chosen (extra ``openai``), and
come behind their deployment's limiter (`LimitedModel`, quota from CADRE_MODEL_MAX_CONCURRENT,
CADRE_MODEL_RPM and CADRE_MODEL_TPM; see `cadre.models.limits`).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigurationError
from .base import LLMMessage, ModelClient, ModelResult, ToolCall, ToolSpec, Usage
from .limits import LimitedModel, Limiter, ModelQuota, limited, limiter_for
from .offline import OfflineClient
from .replay import ReplayClient
from .tools import Tool, ToolOutcome, as_tool

__all__ = [
    "LLMMessage",
    "LimitedModel",
    "Limiter",
    "ModelClient",
    "ModelQuota",
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
    "limited",
    "limiter_for",
]


def client_from_spec(spec: str, env: Mapping[str, str] | None = None) -> ModelClient:
    """The model client a ``CADRE_MODEL`` value names (see the module table); a real model
    comes behind the limiter of its deployment, with the quota the settings in `env`
    (default: the environment) give it."""
    spec = (spec or "offline").strip()
    if spec == "offline":
        return OfflineClient()
    kind, sep, rest = spec.partition(":")
    if kind == "offline":
        return OfflineClient(delay=_seconds(spec, rest))
    if not sep or not rest:
        raise ConfigurationError(
            f"CADRE_MODEL={spec!r}: use offline, offline:<seconds per reply>, openai:<model>, "
            "azure-openai:<deployment> or "
            "openai-compatible:<model>@<base_url>"
        )
    if kind not in ("openai", "azure-openai", "openai-compatible"):
        raise ConfigurationError(f"CADRE_MODEL={spec!r}: unknown model kind {kind!r}")
    from ..settings import Settings
    from .openai import OpenAIClient  # the SDK loads only when a real model is chosen

    quota = Settings.from_env(env).model_quota()
    return limited(OpenAIClient.from_spec(kind, rest, env), quota)


def _seconds(spec: str, text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 600:
        raise ConfigurationError(
            f"CADRE_MODEL={spec!r}: offline:<seconds> takes the delay per reply in seconds, "
            "0 to 600 (e.g. offline:1.5)"
        )
    return value
