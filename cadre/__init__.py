"""Cadre: teams of AI agents as durable, event-driven actors.

The names users import live here; everything else is in submodules
(`cadre.stores`, `cadre.transports`, `cadre.hosts`, `cadre.errors`).

Names load on first use (PEP 562), so ``import cadre`` alone costs almost nothing: a
Functions host or CLI pays only for the parts it touches (cold start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "agent",
    "AgentId": "ids",
    "Context": "context",
    "EmptyState": "agent",
    "Envelope": "envelope",
    "LocalRuntime": "hosts.local",
    "Message": "messages",
    "Registry": "registry",
    "RetryPolicy": "retry",
    "TopicId": "ids",
    "TypePrefixSubscription": "ids",
    "TypeSubscription": "ids",
    "default_registry": "registry",
    "handler": "agent",
    "state_migration": "migrations",
    "upcaster": "messages",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cadre' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # the same names, eagerly, for type checkers and IDEs
    from .agent import Agent, EmptyState, handler  # noqa: F401
    from .context import Context  # noqa: F401
    from .envelope import Envelope  # noqa: F401
    from .hosts.local import LocalRuntime  # noqa: F401
    from .ids import AgentId, TopicId, TypePrefixSubscription, TypeSubscription  # noqa: F401
    from .messages import Message, upcaster  # noqa: F401
    from .migrations import state_migration  # noqa: F401
    from .registry import Registry, default_registry  # noqa: F401
    from .retry import RetryPolicy  # noqa: F401
