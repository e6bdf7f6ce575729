"""The registry: which agent types exist, how to build them, and which topics reach them.

The registry sits below the agents (`cadre.agent` registers into it) and imports none of
them: the built-in agent types every registry has (the inbox) are loaded by module name on
first use, as `cadre.apps.load_app` loads an app's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .errors import ContractError, UnknownAgentType
from .ids import AgentId, Subscription, TopicId, TypeSubscription

if TYPE_CHECKING:
    from .agent import Agent

AgentFactory = Callable[[AgentId, BaseModel], "Agent"]
"""Builds an agent instance from its id and loaded state (for agents with dependencies)."""


@dataclass(frozen=True)
class AgentType:
    """A registered agent type: its name, class and factory."""

    name: str
    cls: type[Agent]
    factory: AgentFactory

    def create(self, agent_id: AgentId, state: BaseModel) -> Agent:
        """A fresh instance for one step."""
        return self.factory(agent_id, state)


@dataclass
class Registry:
    """Agent types and subscriptions known to one runtime.

    Classes declared with ``type=`` join `default_registry`; build a `Registry()` of your
    own to run an isolated set of agents (tests, several apps in one process).
    """

    types: dict[str, AgentType] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    _topic_cache: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    def register(
        self,
        cls: type[Agent],
        *,
        type: str | None = None,
        factory: AgentFactory | None = None,
    ) -> AgentType:
        """Register an agent class under `type` (default: its declared ``type=``)."""
        name = type or cls.agent_type
        if not name:
            raise ContractError(f"{cls.__qualname__} has no agent type: pass type=")
        AgentId(name, "check")  # validates the type name
        existing = self.types.get(name)
        if existing is not None and existing.cls is not cls:
            raise ContractError(
                f"agent type {name!r} is already registered by {existing.cls.__module__}."
                f"{existing.cls.__qualname__}; choose another type= for "
                f"{cls.__module__}.{cls.__qualname__}"
            )
        entry = AgentType(name, cls, factory or cls)
        self.types[name] = entry
        for topic_type in cls.subscribe_to:
            self.add_subscription(TypeSubscription(topic_type, name))
        return entry

    def add_subscription(self, subscription: Subscription) -> None:
        """Route matching topics to an agent type (see `TypeSubscription`)."""
        if subscription not in self.subscriptions:
            self.subscriptions.append(subscription)
            self._topic_cache.clear()

    def get(self, agent_type: str) -> AgentType:
        """The registered type; `UnknownAgentType` when it is not registered here.

        The built-in types (`BUILTIN_TYPES`: the inbox) are present in every registry.
        """
        try:
            return self.types[agent_type]
        except KeyError:
            if agent_type in BUILTIN_TYPES:
                return _builtin(agent_type)
            known = ", ".join(sorted(self.types)) or "none"
            raise UnknownAgentType(
                f"agent type {agent_type!r} is not registered in this process (known: {known}); "
                "import the module that declares it"
            ) from None

    def recipients(self, topic: TopicId) -> list[AgentId]:
        """Every agent a publish to `topic` reaches, once each, in subscription order."""
        return [AgentId.trusted(t, topic.source) for t in self._agent_types(topic.type)]

    def recipient_addresses(self, topic: TopicId) -> list[str]:
        """`recipients` in their string form (``type/key``), as envelopes carry them."""
        source = topic.source
        return [f"{t}/{source}" for t in self._agent_types(topic.type)]

    def _agent_types(self, topic_type: str) -> tuple[str, ...]:
        agent_types = self._topic_cache.get(topic_type)
        if agent_types is None:
            probe = TopicId(topic_type, "probe")  # subscriptions decide on the type alone
            seen: dict[str, None] = {}
            for sub in self.subscriptions:
                target = sub.recipient(probe)
                if target is not None:
                    seen.setdefault(target.type, None)
            agent_types = tuple(seen)
            self._topic_cache[topic_type] = agent_types
        return agent_types


INBOX_TYPE = "cadre.inbox"
"""The agent type of the built-in inbox (`cadre.inbox`); its key is the task id."""

BUILTIN_TYPES: dict[str, tuple[str, str]] = {INBOX_TYPE: ("cadre.inbox", "Inbox")}
"""The agent types every registry has: name -> (module, class), imported on first use."""


@cache
def _builtin(agent_type: str) -> AgentType:
    module, name = BUILTIN_TYPES[agent_type]
    cls = getattr(importlib.import_module(module), name)
    return AgentType(agent_type, cls, cls)


default_registry = Registry()
"""The registry that agent classes declared with ``type=`` join."""
