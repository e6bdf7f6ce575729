"""Identities: who a message is for (`AgentId`), where it is published (`TopicId`), and
which agents a topic reaches (subscriptions)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _check_type(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _TYPE_RE.match(value):
        raise ValueError(
            f"invalid {kind} {value!r}: use letters, digits, '_', '.', '-' "
            "and start with a letter or '_'"
        )


@dataclass(frozen=True, slots=True)
class AgentId:
    """One agent instance: its type (which class handles it) and its key (which instance).

    The string form is ``type/key``; the key may itself contain ``/``.
    """

    type: str
    key: str

    def __post_init__(self) -> None:
        _check_type("agent type", self.type)
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"agent key must be a non-empty string, got {self.key!r}")

    def __str__(self) -> str:
        return f"{self.type}/{self.key}"

    @classmethod
    def trusted(cls, agent_type: str, key: str) -> AgentId:
        """An id from parts validated already (a registered type, a topic source)."""
        agent_id = object.__new__(cls)
        object.__setattr__(agent_id, "type", agent_type)
        object.__setattr__(agent_id, "key", key)
        return agent_id

    @classmethod
    def parse(cls, text: str) -> AgentId:
        """Parse ``type/key`` back into an `AgentId` (cached: ids repeat on every step)."""
        return _parse_agent_id(text)


@dataclass(frozen=True, slots=True)
class TopicId:
    """A topic: its type (what kind of event) and its source (which conversation or task).

    Subscribed agents receive the message under the key given by the source.
    """

    type: str
    source: str

    def __post_init__(self) -> None:
        _check_type("topic type", self.type)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"topic source must be a non-empty string, got {self.source!r}")

    def __str__(self) -> str:
        return f"{self.type}/{self.source}"

    @classmethod
    def parse(cls, text: str) -> TopicId:
        """Parse ``type/source`` back into a `TopicId` (cached: every subscriber's copy of a
        published message carries its topic)."""
        return _parse_topic_id(text)


@lru_cache(maxsize=8192)
def _parse_topic_id(text: str) -> TopicId:
    topic_type, sep, source = text.partition("/")
    if not sep:
        raise ValueError(f"invalid topic id {text!r}: expected 'type/source'")
    return TopicId(topic_type, source)


@lru_cache(maxsize=8192)
def _parse_agent_id(text: str) -> AgentId:
    agent_type, sep, key = text.partition("/")
    if not sep:
        raise ValueError(f"invalid agent id {text!r}: expected 'type/key'")
    return AgentId(agent_type, key)


class Subscription(Protocol):
    """Maps a topic to the agent that receives it, or to nobody.

    The agent type it picks must depend on the topic type alone (the registry caches the
    answer per topic type); the key is the topic source.
    """

    @property
    def agent_type(self) -> str: ...

    def recipient(self, topic: TopicId) -> AgentId | None:
        """The agent this topic reaches through this subscription, or None."""
        ...


@dataclass(frozen=True, slots=True)
class TypeSubscription:
    """Topics of exactly `topic_type` reach agent ``agent_type/<topic source>``."""

    topic_type: str
    agent_type: str

    def __post_init__(self) -> None:
        _check_type("topic type", self.topic_type)
        _check_type("agent type", self.agent_type)

    def recipient(self, topic: TopicId) -> AgentId | None:
        """The agent keyed by the topic source, when the topic type matches exactly."""
        if topic.type == self.topic_type:
            return AgentId(self.agent_type, topic.source)
        return None


@dataclass(frozen=True, slots=True)
class TypePrefixSubscription:
    """Topics whose type starts with `topic_type_prefix` reach ``agent_type/<topic source>``."""

    topic_type_prefix: str
    agent_type: str

    def __post_init__(self) -> None:
        if not self.topic_type_prefix:
            raise ValueError("topic type prefix must not be empty")
        _check_type("agent type", self.agent_type)

    def recipient(self, topic: TopicId) -> AgentId | None:
        """The agent keyed by the topic source, when the topic type has the prefix."""
        if topic.type.startswith(self.topic_type_prefix):
            return AgentId(self.agent_type, topic.source)
        return None
