"""Old messages and old state outlive the code that wrote them: after an upgrade, an older
envelope is upcast and older state is migrated; what is newer than the code, or has no
migration, is dead-lettered with a clear reason and the stored state is left untouched."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from cadre import Agent, Context, Message, Registry, handler
from cadre.envelope import Envelope, new_id
from cadre.errors import ContractError
from cadre.ids import AgentId
from cadre.messages import ContractRegistry
from cadre.migrations import StateMigrations, state_migration, state_version
from cadre.processing import Disposition, Processor, RetryPolicy
from cadre.step import Step
from cadre.stores.base import AgentRecord
from tests.support.faults import RecordingTransport

LEDGER = AgentId("ledger", "a")


class Deposit(Message, name="test.versioning.Deposit", version=3):
    """v1: {"cents": int}; v2: {"amount": float}; v3 adds a currency."""

    amount: float
    currency: str


class Ledger(Agent):
    """State v3; v1 was {"balance_cents": int}, v2 {"balance": float}."""

    class State(BaseModel):
        state_version: ClassVar[int] = 3
        balance: float = 0.0
        currencies: list[str] = []

    @handler
    async def deposit(self, msg: Deposit, ctx: Context) -> None:
        self.state.balance += msg.amount
        if msg.currency not in self.state.currencies:
            self.state.currencies.append(msg.currency)


class Unmigrated(Agent):
    """State v2 with no migration registered from v1."""

    class State(BaseModel):
        state_version: ClassVar[int] = 2
        balance: float = 0.0

    @handler
    async def deposit(self, msg: Deposit, ctx: Context) -> None:
        self.state.balance += msg.amount


@state_migration(Ledger, from_version=1)
def cents_to_balance(state: dict[str, Any]) -> dict[str, Any]:
    return {"balance": state["balance_cents"] / 100}


@state_migration(Ledger.State, from_version=2)
def add_currencies(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "currencies": ["EUR"]}


def contracts() -> ContractRegistry:
    registry = ContractRegistry()
    registry.register(Deposit)
    registry.add_upcaster(Deposit.message_name, 1, lambda p: {"amount": p["cents"] / 100})
    registry.add_upcaster(Deposit.message_name, 2, lambda p: {**p, "currency": "EUR"})
    return registry


def processor(store: Any) -> Processor:
    agents = Registry()
    agents.register(Ledger, type="ledger")
    agents.register(Unmigrated, type="unmigrated")
    step = Step(store, RecordingTransport(), registry=agents, contracts=contracts())
    return Processor(step, policy=RetryPolicy(max_attempts=1, base_delay=0.01))


def deposit(version: int, payload: dict[str, Any], to: AgentId = LEDGER) -> Envelope:
    return Envelope(
        id=new_id(),
        message=Deposit.message_name,
        version=version,
        payload=payload,
        task_id="t1",
        recipient=str(to),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def seed(store: Any, agent: AgentId, state: dict[str, Any], version: int) -> AgentRecord:
    await store.save(AgentRecord(agent, json.dumps(state), state_version=version), if_match=None)
    return await store.load(agent)


async def test_envelopes_of_every_older_version_are_upcast_before_the_handler(store) -> None:
    proc = processor(store)
    for version, payload in [
        (1, {"cents": 250}),
        (2, {"amount": 1.5}),
        (3, {"amount": 1, "currency": "USD"}),
    ]:
        processed = await proc.process(deposit(version, payload))
        assert processed.disposition is Disposition.HANDLED, processed.error
    record = await store.load(LEDGER)
    assert json.loads(record.state or "{}") == {"balance": 5.0, "currencies": ["EUR", "USD"]}
    assert record.state_version == 3


async def test_envelope_newer_than_the_code_is_dead_lettered_not_misparsed(store) -> None:
    processed = await processor(store).process(deposit(4, {"amount": 1, "currency": "EUR"}))
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert letter.reason == "unsupported_version"
    assert "knows versions up to 3" in letter.detail
    assert (await store.load(LEDGER)).etag is None


async def test_state_written_by_an_older_agent_version_is_migrated_on_load(store) -> None:
    await seed(store, LEDGER, {"balance_cents": 1000}, version=1)
    processed = await processor(store).process(deposit(3, {"amount": 5, "currency": "USD"}))
    assert processed.disposition is Disposition.HANDLED, processed.error
    record = await store.load(LEDGER)
    assert json.loads(record.state or "{}") == {"balance": 15.0, "currencies": ["EUR", "USD"]}
    assert record.state_version == 3  # saved under the new version: migrated once only


async def test_state_newer_than_the_code_is_dead_lettered_and_left_untouched(store) -> None:
    before = await seed(store, LEDGER, {"balance": 7, "future": True}, version=4)
    processed = await processor(store).process(deposit(3, {"amount": 5, "currency": "EUR"}))
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert letter.reason == "state_version_unsupported"
    assert "written by state version 4" in letter.detail
    assert "knows versions up to 3" in letter.detail
    after = await store.load(LEDGER)
    assert (after.state, after.state_version, after.etag) == (before.state, 4, before.etag)


async def test_state_with_no_migration_is_dead_lettered_not_reset(store) -> None:
    agent = AgentId("unmigrated", "a")
    before = await seed(store, agent, {"balance": 7}, version=1)
    processed = await processor(store).process(
        deposit(3, {"amount": 5, "currency": "EUR"}, to=agent)
    )
    assert processed.disposition is Disposition.DEAD_LETTERED
    [letter] = await store.list_dead_letters()
    assert letter.reason == "state_version_unsupported"
    assert "no state migration from version 1 to 2" in letter.detail
    after = await store.load(agent)
    assert (after.state, after.state_version, after.etag) == (before.state, 1, before.etag)


async def test_first_save_records_the_declared_state_version(store) -> None:
    agent = AgentId("unmigrated", "new")
    processed = await processor(store).process(
        deposit(3, {"amount": 2, "currency": "EUR"}, to=agent)
    )
    assert processed.disposition is Disposition.HANDLED, processed.error
    record = await store.load(agent)
    assert (json.loads(record.state or "{}"), record.state_version) == ({"balance": 2.0}, 2)


def test_state_versions_and_migrations_are_declared_correctly() -> None:
    assert state_version(Ledger.State) == 3
    assert state_version(BaseModel) == 1

    class Bad(BaseModel):
        state_version: ClassVar[int] = 0

    with pytest.raises(ContractError, match="state_version must be an integer >= 1"):
        state_version(Bad)
    own = StateMigrations()
    own.add(Ledger, 1, dict)
    assert own.has(Ledger.State, 1) and not own.has(Ledger, 2)
    with pytest.raises(ContractError, match="already registered"):
        own.add(Ledger.State, 1, dict)
    with pytest.raises(ContractError, match="neither an Agent class nor"):
        own.add(int, 1, dict)
