"""The host seam: what every runtime offers its clients (the HTTP API, `Tasks`, the CLI).

A *runtime* is one host's way to run agents: `LocalRuntime` (in this process, memory or
SQLite), `FunctionsRuntime` (Azure Functions: Service Bus and Cosmos DB) and
`WorkersRuntime` (in front of ``cadre worker`` processes: RabbitMQ and PostgreSQL). Each
implements `Runtime` through one shared client side, `cadre.hosts._client.Client`, and is
built from the settings in one place, its ``from_settings`` classmethod.

Clients are typed against the smallest protocol they use:

- `Sender`: send a message from outside any agent, read the store, know the registry.
  What `cadre.teams.Tasks` needs.
- `Runtime`: a `Sender` that also publishes, redrives dead letters, reports its health,
  starts and closes. What the HTTP API (`cadre.api.create_app`) needs.
- `Embedded`: a `Runtime` whose agents run in this process, so a client can wait for them
  to be idle (`run_until_idle`). Only the local runtime is one; the CLI's ``send`` and
  ``dlq redrive`` use it to run what they sent.

This module holds only the protocols (no import of any host or SDK), so the API and the
teams import it for nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

if TYPE_CHECKING:
    from .envelope import Envelope
    from .ids import AgentId, TopicId
    from .messages import Message
    from .registry import Registry
    from .stores.base import StateStore

Checks = dict[str, dict[str, Any]]
"""A runtime's health: one ``{"ok": bool, "detail": str}`` per dependency, by name."""


class Sender(Protocol):
    """A runtime a client can send to and read from (`cadre.teams.Tasks` needs this)."""

    @property
    def store(self) -> StateStore:
        """The state store its agents write (reads go here)."""
        ...

    @property
    def registry(self) -> Registry:
        """Where its agent types and teams are registered."""
        ...

    async def send(
        self,
        to: AgentId,
        message: Message,
        *,
        task_id: str | None = None,
        reply_to: AgentId | None = None,
    ) -> Envelope:
        """Send a message from outside any agent; a new task unless `task_id` is given.
        Replies go to `reply_to`, or else to the task's inbox (`cadre.inbox`)."""
        ...


class Runtime(Sender, Protocol):
    """Everything a host offers its clients (the HTTP API needs this)."""

    async def publish(
        self, topic: TopicId, message: Message, *, task_id: str | None = None
    ) -> list[Envelope]:
        """Publish from outside any agent to every subscriber of `topic`."""
        ...

    async def redrive(self, letter_id: str) -> Envelope:
        """Send a dead letter's envelope again (attempt 1) and remove it from the dead
        letters (`NotFound` when there is none, `EnvelopeInvalid` when its bytes are not
        an envelope)."""
        ...

    async def health(self) -> Checks:
        """The checks ``GET /api/health`` reports; failures are reported, not raised."""
        ...

    async def start(self) -> None:
        """Connect (and, for the local runtime, start running agents)."""
        ...

    async def close(self) -> None:
        """Stop and release the transport and the store."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Embedded(Runtime, Protocol):
    """A runtime whose agents run in this process (the local runtime)."""

    async def run_until_idle(self, *, include_timers: bool = False) -> None:
        """Wait until no envelope is queued or being handled."""
        ...


__all__ = ["Checks", "Embedded", "Runtime", "Sender"]
