"""The agent step: the one thing every host runs for every envelope.

    record = load(recipient)                      state + etag + seen ids + outbox
    publish(record.outbox)                        a crashed step's replies go out first
    if envelope.id in record.seen: clear; return  redelivery: no second effect
    agent  = create(type, migrate(record.state))  older state versions migrated on load
    await agent.dispatch(message, ctx)            outgoing messages collect in ctx.outbox
    etag   = save(record', if_match=record.etag)  state + seen + outbox: one atomic write
    publish(outbox); clear_outbox(etag)           ids derived from envelope.id: idempotent

A crash between any two lines loses nothing and doubles nothing once the envelope is
redelivered: before the save nothing happened; after it, the envelope is in `seen` and
its outbox is re-published with the same ids, which receivers drop as duplicates.
Failures are not handled here: `cadre.processing` retries and dead-letters around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .context import Context
from .envelope import Envelope
from .errors import EnvelopeInvalid
from .messages import ContractRegistry, contracts
from .migrations import load_state, state_version
from .registry import Registry, default_registry
from .stores.base import AgentRecord, StateStore
from .transports.base import Transport

DEFAULT_SEEN_LIMIT = 64
"""How many handled envelope ids each agent remembers to drop redeliveries."""


class Outcome(StrEnum):
    """What a step did."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome and the envelopes the step published."""

    outcome: Outcome
    published: tuple[Envelope, ...] = ()


_HANDLED_NOTHING = StepResult(Outcome.HANDLED)


class Step:
    """Runs one envelope through its recipient agent (see the module docstring)."""

    def __init__(
        self,
        store: StateStore,
        transport: Transport,
        *,
        registry: Registry | None = None,
        contracts: ContractRegistry = contracts,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
    ) -> None:
        self.store = store
        self.transport = transport
        self.registry = registry or default_registry
        self.contracts = contracts
        if seen_limit < 1:
            raise ValueError("seen_limit must be at least 1")
        self.seen_limit = seen_limit

    async def __call__(self, envelope: Envelope) -> StepResult:
        """Handle `envelope` once; raises `DeliveryError`s and the handler's exceptions."""
        recipient = envelope.recipient_id
        if recipient is None:
            raise EnvelopeInvalid(f"envelope {envelope.id} has no recipient")
        agent_type = self.registry.get(recipient.type)
        message = self.contracts.decode(envelope.message, envelope.version, envelope.payload)
        agent_type.cls.handler_for(type(message), agent_type.name)

        record = await self.store.load(recipient)
        if record.outbox:
            await self.transport.send(record.outbox)
        if envelope.id in record.seen:
            if record.outbox:
                await self.store.clear_outbox(recipient, record.etag)  # type: ignore[arg-type]
            return StepResult(Outcome.DUPLICATE, record.outbox)

        state_model = agent_type.cls.State
        agent = agent_type.create(recipient, load_state(agent_type.name, state_model, record))
        ctx = Context(envelope, recipient, self.registry)
        await agent.dispatch(message, ctx)

        outbox = tuple(ctx.outbox)
        seen = record.seen
        if len(seen) >= self.seen_limit:
            seen = seen[len(seen) - self.seen_limit + 1 :]
        etag = await self.store.save(
            AgentRecord(
                recipient,
                state=agent.state.model_dump_json(),
                state_version=state_version(state_model),
                seen=(*seen, envelope.id),
                outbox=outbox,
            ),
            if_match=record.etag,
        )
        if not outbox:
            return _HANDLED_NOTHING
        await self.transport.send(outbox)
        await self.store.clear_outbox(recipient, etag)
        return StepResult(Outcome.HANDLED, outbox)
