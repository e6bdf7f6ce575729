"""Cadre: teams of AI agents as durable, event-driven actors.

The names users import live here; everything else is in submodules
(`cadre.stores`, `cadre.transports`, `cadre.hosts`, `cadre.errors`).
"""

from .agent import Agent, EmptyState, handler
from .context import Context
from .envelope import Envelope
from .hosts.local import LocalRuntime
from .ids import AgentId, TopicId, TypePrefixSubscription, TypeSubscription
from .messages import Message, upcaster
from .processing import RetryPolicy
from .registry import Registry, default_registry

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentId",
    "Context",
    "EmptyState",
    "Envelope",
    "LocalRuntime",
    "Message",
    "Registry",
    "RetryPolicy",
    "TopicId",
    "TypePrefixSubscription",
    "TypeSubscription",
    "default_registry",
    "handler",
    "upcaster",
]
