"""The local runtime: every agent in this process, state in memory or in a SQLite file.

    async with LocalRuntime.sqlite(".cadre/cadre.db") as rt:
        await rt.send(AgentId("counter", "a"), Add(amount=2))
        await rt.run_until_idle()

One envelope at a time per agent, in order (the transport hands out one envelope per agent
at a time); different agents concurrently, up to `concurrency` steps at once. With the
SQLite store, pending envelopes and timers are in the file too, so a runtime stopped at any
point restarts with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import BaseModel

from .. import telemetry
from ..envelope import Envelope, new_id, utcnow
from ..errors import EnvelopeInvalid
from ..ids import AgentId, TopicId
from ..inbox import INBOX_TYPE, InboxState, Reply
from ..messages import ContractRegistry, Message, contracts
from ..processing import Disposition, Processed, Processor, RetryPolicy
from ..registry import Registry, default_registry
from ..settings import DEFAULT_CONCURRENCY
from ..step import DEFAULT_SEEN_LIMIT, Step
from ..stores.base import DeadLetter, StateStore
from ..stores.memory import MemoryStore
from ..transports.base import Delivery, Transport
from ..transports.inprocess import InProcessTransport

log = logging.getLogger("cadre.local")


def client_envelopes(
    message: Message,
    recipients: list[str],
    *,
    task_id: str | None = None,
    topic: str | None = None,
    reply_to: AgentId | None = None,
) -> list[Envelope]:
    """Envelopes for a message sent from outside any agent (a client, the HTTP API), one per
    recipient, in a new task unless `task_id` is given, with the producer span's
    traceparent (so the task is one trace from here). Replies go to `reply_to`, or else to
    the task's inbox. Every host's ``send`` builds its envelopes here."""
    if not message.message_name:
        raise TypeError(f"{type(message).__qualname__} is abstract and cannot be sent")
    if not recipients:
        return []
    payload = message.model_dump(mode="json")
    task = task_id or new_id()
    # One random id per call; each recipient's envelope id is its first 96 bits and the
    # recipient's index (a fan-out to many subscribers costs one random draw, not one each).
    base = new_id()[:24]
    ids = [f"{base}{index:08x}" for index in range(len(recipients))]
    first_id = ids[0]
    traceparent = telemetry.current().producer_traceparent(
        "publish" if topic else "send",
        message.message_name,
        topic or recipients[0],
        task_id=task,
        envelope_id=first_id,
        payload=payload,
    )
    shared = {
        "message": message.message_name,
        "version": message.message_version,
        "payload": payload,
        "task_id": task,
        "topic": topic,
        "reply_to": str(reply_to) if reply_to else f"{INBOX_TYPE}/{task}",
        "created_at": utcnow(),
        "causation_id": None,
        "sender": None,
        "not_before": None,
        "attempt": 1,
        "traceparent": traceparent,
    }
    # Built from validated parts: skip re-validating what this process just made.
    envelopes = []
    for envelope_id, recipient in zip(ids, recipients, strict=True):
        fields = shared.copy()
        fields["id"], fields["recipient"] = envelope_id, recipient
        envelopes.append(Envelope.trusted_fields(fields))
    return envelopes


async def send_from_client(
    transport: Transport,
    to: AgentId,
    message: Message,
    *,
    task_id: str | None = None,
    reply_to: AgentId | None = None,
) -> Envelope:
    """Send one message from outside any agent (`client_envelopes`) and return its envelope:
    every host's ``send`` and the workers' `submit`."""
    [envelope] = client_envelopes(message, [str(to)], task_id=task_id, reply_to=reply_to)
    await transport.send([envelope])
    return envelope


class LocalRuntime:
    """Runs agents in-process over the in-process transport.

    `concurrency` bounds the steps under way at once. A step keeps its slot while it waits
    on its model, so the bound is sized for steps that wait, not for CPUs: the default
    (`DEFAULT_CONCURRENCY`, 1024) lets that many agents wait on models while others run.
    An idle slot costs next to nothing; a step under way holds its agent's record and model
    context (docs/workers.md, "Sizing CADRE_CONCURRENCY"). It orders nothing: one agent's
    envelopes never overlap, whatever its value.
    """

    def __init__(
        self,
        *,
        store: StateStore | None = None,
        registry: Registry | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
        contracts: ContractRegistry = contracts,
    ) -> None:
        self.store: StateStore = store if store is not None else MemoryStore()
        make_journal = getattr(self.store, "journal", None)
        self.transport = InProcessTransport(make_journal() if make_journal else None)
        self.registry = registry or default_registry
        self.step = Step(
            self.store,
            self.transport,
            registry=self.registry,
            contracts=contracts,
            seen_limit=seen_limit,
        )
        self.processor = Processor(self.step, policy=policy)
        self.concurrency = concurrency
        self._consumers: list[asyncio.Task[None]] = []
        self._in_step: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @classmethod
    def sqlite(cls, path: str | Path, **kwargs: Any) -> LocalRuntime:
        """A runtime on the SQLite store at `path` (the embedded default)."""
        from ..stores.sqlite import SQLiteStore

        return cls(store=SQLiteStore(path), **kwargs)

    async def start(self) -> None:
        """Reload pending envelopes and start consuming."""
        if self._consumers:
            return
        self._stopping = False
        await self.transport.start()
        self._consumers = [
            asyncio.create_task(self._consume(), name=f"cadre-consumer-{i}")
            for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        """Let steps under way finish, then stop. Queued envelopes stay queued."""
        self._stopping = True
        for task in self._consumers:
            if task not in self._in_step:
                task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._consumers = []

    async def close(self) -> None:
        """Stop, then release the transport and the store."""
        await self.stop()
        await self.transport.close()
        await self.store.close()

    async def __aenter__(self) -> LocalRuntime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(
        self,
        to: AgentId,
        message: Message,
        *,
        task_id: str | None = None,
        reply_to: AgentId | None = None,
    ) -> Envelope:
        """Send a message from outside any agent; starts a new task unless `task_id` is given.

        Replies go to `reply_to`, or else to the task's inbox (see `replies`).
        """
        envelope = await send_from_client(
            self.transport, to, message, task_id=task_id, reply_to=reply_to
        )
        self.transport.flush()
        return envelope

    async def publish(
        self, topic: TopicId, message: Message, *, task_id: str | None = None
    ) -> list[Envelope]:
        """Publish from outside any agent to every subscriber of `topic`."""
        envelopes = client_envelopes(
            message, self.registry.recipient_addresses(topic), task_id=task_id, topic=str(topic)
        )
        await self.transport.send(envelopes)
        self.transport.flush()
        return envelopes

    async def run_until_idle(self, *, include_timers: bool = False) -> None:
        """Wait until no envelope is queued or being handled.

        Timers that are not due yet do not count, unless `include_timers` is set, in which
        case this waits for them to fire and their effects to settle.
        """
        await self.transport.wait_idle(include_timers=include_timers)

    async def state(self, agent_id: AgentId) -> BaseModel:
        """The stored state of one agent, as its agent type's `State` model."""
        record = await self.store.load(agent_id)
        model = self.registry.get(agent_id.type).cls.State
        return model.model_validate_json(record.state) if record.state else model()

    async def replies(self, task_id: str) -> list[Reply]:
        """The replies to messages sent from outside with no `reply_to` in task `task_id`,
        oldest first (they are kept by the built-in inbox agent, see `cadre.inbox`)."""
        state = await self.state(AgentId(INBOX_TYPE, task_id))
        assert isinstance(state, InboxState)
        return list(state.replies)

    async def redrive(self, letter_id: str) -> Envelope:
        """Send a dead letter's envelope again (attempt 1) and remove it from the dead letters."""
        envelope = await redrive_letter(self.store, self.transport, letter_id)
        self.transport.flush()
        return envelope

    async def _consume(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._stopping:
            delivery = await self.transport.receive()
            self._in_step.add(current)
            try:
                await self._settle(delivery, await self._process(delivery))
            except Exception:  # a consumer must outlive any one delivery
                log.exception("settling %s failed; retrying it", delivery.envelope.id)
                await self.transport.retry(delivery, self.processor.policy.delay(1))
            finally:
                self._in_step.discard(current)

    async def _process(self, delivery: Delivery) -> Processed:
        try:
            return await self.processor.process(delivery.envelope)
        except Exception as exc:  # the store could not even record a dead letter
            log.exception("processing %s failed; it will be retried", delivery.envelope.id)
            delay = self.processor.policy.delay(delivery.envelope.attempt)
            return Processed(
                Disposition.RETRY, delivery.envelope, retry_after=delay, error=str(exc)
            )

    async def _settle(self, delivery: Delivery, processed: Processed) -> None:
        if processed.disposition is Disposition.RETRY:
            await self.transport.retry(delivery, processed.retry_after or 0.0)
        else:
            await self.transport.ack(delivery)


def redrive_envelope(letter: DeadLetter) -> Envelope:
    """The envelope to send again for a dead letter: same id and content, attempt 1;
    `EnvelopeInvalid` when its bytes are not an envelope (nothing to send again)."""
    try:
        envelope = Envelope.from_bytes(letter.body)
    except RecursionError:
        raise EnvelopeInvalid(f"dead letter {letter.id}: its JSON is nested too deeply") from None
    return envelope.model_copy(update={"attempt": 1, "not_before": None})


async def redrive_letter(store: StateStore, transport: Transport, letter_id: str) -> Envelope:
    """Send a dead letter's envelope again (attempt 1), then remove the dead letter
    (`NotFound` when there is none). Every host's ``redrive``."""
    letter = await store.get_dead_letter(letter_id)
    envelope = redrive_envelope(letter)
    await transport.send([envelope])
    await store.delete_dead_letter(letter_id)
    return envelope


async def store_check(store: StateStore) -> dict[str, Any]:
    """A health check of a store: a point read of a record that never exists. Reports a
    failure rather than raising it (a health check must answer)."""
    try:
        await store.load(AgentId(INBOX_TYPE, "health-probe"))
    except Exception as exc:
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return {"ok": True, "detail": f"{type(store).__name__} answered a read"}
