"""Versioned agent state: a state model declares its version, older stored state is migrated.

    class Counter(Agent, type="counter"):
        class State(BaseModel):
            state_version: ClassVar[int] = 2
            total: int = 0            # v1 called it "count"

    @state_migration(Counter, from_version=1)
    def count_to_total(state: dict) -> dict:
        return {"total": state.get("count", 0)}

A task parked for a week resumes on new code: the step loads the stored JSON, runs the
migrations from the version recorded with it (`AgentRecord.state_version`) up to the code's
version, validates the result, and saves it under the new version. State is never reset
silently: a stored version newer than the code knows, or a missing migration, is a
`StateVersionUnsupported` (the envelope is dead-lettered and the stored state untouched).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from .errors import ContractError, StateVersionUnsupported
from .stores.base import AgentRecord

StateMigration = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the JSON document of state version N into the document of version N + 1."""


_VERSIONS: dict[type[BaseModel], int] = {}
"""state_version per model class: a missing class attribute goes through pydantic's slow
metaclass ``__getattr__``, and every step asks twice (load and save)."""


def state_version(model: type[BaseModel]) -> int:
    """The version a state model declares (``state_version: ClassVar[int]``; default 1)."""
    try:
        return _VERSIONS[model]
    except KeyError:
        pass
    version = getattr(model, "state_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ContractError(
            f"state model {model.__qualname__}: state_version must be an integer >= 1"
        )
    _VERSIONS[model] = version
    return version


def _state_model(owner: type) -> type[BaseModel]:
    """The state model of an agent class, or the model itself."""
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        return owner
    model = getattr(owner, "State", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model
    raise ContractError(f"{owner!r} is neither an Agent class nor a pydantic state model")


class StateMigrations:
    """The migrations of every state model, keyed by (state model, from_version)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[type[BaseModel], int], StateMigration] = {}

    def add(self, owner: type, from_version: int, fn: StateMigration) -> None:
        """Register `fn` to migrate `owner`'s state (agent class or model) from a version."""
        model = _state_model(owner)
        if not isinstance(from_version, int) or from_version < 1:
            raise ContractError(f"{model.__qualname__}: from_version must be an integer >= 1")
        key = (model, from_version)
        if key in self._by_key:
            raise ContractError(
                f"a state migration for {model.__qualname__} v{from_version} is already registered"
            )
        self._by_key[key] = fn

    def has(self, owner: type, from_version: int) -> bool:
        """Whether a migration from `from_version` is registered for `owner`'s state."""
        return (_state_model(owner), from_version) in self._by_key

    def load(self, agent_type: str, model: type[BaseModel], record: AgentRecord) -> BaseModel:
        """The agent's state from its record: fresh, as stored, or migrated to the model's version.

        Raises `StateVersionUnsupported` (a `DeliveryError`) when the stored version is newer
        than the model's or a migration in the chain is missing.
        """
        if record.state is None:
            return model()
        current, stored = state_version(model), record.state_version
        if stored == current:
            return model.model_validate_json(record.state)
        if stored > current:
            raise StateVersionUnsupported(
                f"the state of {record.agent_id} was written by state version {stored} of "
                f"agent type {agent_type!r}, but this code knows versions up to {current}; "
                "deploy the code that declares it (the stored state is left untouched)"
            )
        document = json.loads(record.state)
        for version in range(stored, current):
            migrate = self._by_key.get((model, version))
            if migrate is None:
                raise StateVersionUnsupported(
                    f"the state of {record.agent_id} is at state version {stored} and agent "
                    f"type {agent_type!r} is at {current}, but no state migration from "
                    f"version {version} to {version + 1} is registered; declare one with "
                    f"@state_migration(..., from_version={version})"
                )
            document = migrate(document)
        return model.model_validate(document)


migrations = StateMigrations()
"""The process-wide state migrations that `state_migration` registers into."""


def state_migration(owner: type, from_version: int) -> Callable[[StateMigration], StateMigration]:
    """Declare the plain function (dict -> dict) that migrates `owner`'s state to the next
    version; `owner` is the agent class or its state model."""

    def register(fn: StateMigration) -> StateMigration:
        migrations.add(owner, from_version, fn)
        return fn

    return register


def load_state(agent_type: str, model: type[BaseModel], record: AgentRecord) -> BaseModel:
    """`StateMigrations.load` on the process-wide migrations."""
    return migrations.load(agent_type, model, record)
