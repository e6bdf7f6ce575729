"""The committed contracts: `cadre schema export` writes them, `cadre schema check` guards them.

    schemas/messages/<message name>.v<version>.json     one per message contract version
    schemas/state/<agent type>.v<version>.json          one per agent state model version

Each file is the pydantic JSON Schema of the model plus ``x-cadre-kind``, ``x-cadre-name``
and ``x-cadre-version``, written with sorted keys and a trailing newline, so exporting
unchanged code changes no file. Export never deletes: the files of older versions stay as
the history that tells the check which versions may still be in flight or in a store.

The check fails (one line per problem) when a committed version's schema changed in a
breaking way (`cadre.schemas.breaking_changes`), when a version newer than a committed one
has no upcaster / state migration chain from it, when a contract in code has no committed
schema, and when a committed contract disappeared from the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .agent import EmptyState
from .messages import ContractRegistry, contracts
from .migrations import StateMigrations, migrations, state_version
from .registry import Registry, default_registry
from .schemas import Schema, breaking_changes

MESSAGES, STATE = "messages", "state"


@dataclass(frozen=True)
class Contract:
    """One contract version as code declares it: its schema and which versions it upcasts."""

    kind: str
    name: str
    version: int
    schema: Schema
    upcasts_from: frozenset[int] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        """How problems name it: ``demo.Ping v2`` or ``state of counter v2``."""
        prefix = "state of " if self.kind == STATE else ""
        return f"{prefix}{self.name} v{self.version}"

    @property
    def path(self) -> str:
        """Its file, relative to the schemas folder."""
        return f"{self.kind}/{self.name}.v{self.version}.json"

    def document(self) -> Schema:
        """The JSON Schema as committed, with the contract's identity."""
        return {
            **self.schema,
            "x-cadre-kind": self.kind,
            "x-cadre-name": self.name,
            "x-cadre-version": self.version,
        }


def message_contract(
    cls: type[BaseModel], name: str, version: int, upcasts_from: Iterable[int] = ()
) -> Contract:
    """The contract of a message model (any pydantic model, so tests can fake history)."""
    return Contract(MESSAGES, name, version, cls.model_json_schema(), frozenset(upcasts_from))


def state_contract(
    agent_type: str, model: type[BaseModel], upcasts_from: Iterable[int] = ()
) -> Contract:
    """The contract of an agent type's state model."""
    version = state_version(model)
    return Contract(STATE, agent_type, version, model.model_json_schema(), frozenset(upcasts_from))


def collect(
    registry: ContractRegistry = contracts,
    agents: Registry = default_registry,
    state_migrations: StateMigrations = migrations,
) -> list[Contract]:
    """Every named message contract and every stateful agent type's state, sorted."""
    found = []
    for name, cls in registry.names().items():
        if "<locals>" in name:
            continue  # declared inside a function: not part of any released contract
        version = cls.message_version
        ups = [v for v in range(1, version) if registry.has_upcaster(name, v)]
        found.append(message_contract(cls, name, version, ups))
    types = {**agents.types, "cadre.inbox": agents.get("cadre.inbox")}  # built in everywhere
    for agent_type, entry in types.items():
        model = entry.cls.State
        if model is EmptyState:
            continue
        ups = [v for v in range(1, state_version(model)) if state_migrations.has(model, v)]
        found.append(state_contract(agent_type, model, ups))
    return sorted(found, key=lambda c: (c.kind, c.name))


def render(contract: Contract) -> str:
    """The file text: deterministic, so a re-export of unchanged code gives no diff."""
    return json.dumps(contract.document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(found: Iterable[Contract], directory: Path) -> list[Path]:
    """Write each contract's file; return the files that were created or changed."""
    written = []
    for contract in found:
        target = directory / contract.path
        text = render(contract)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def committed(directory: Path) -> dict[tuple[str, str], dict[int, Schema]]:
    """The committed schemas by (kind, name), then version."""
    history: dict[tuple[str, str], dict[int, Schema]] = {}
    for kind in (MESSAGES, STATE):
        for path in sorted((directory / kind).glob("*.json")):
            document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            name, version = document.get("x-cadre-name"), document.get("x-cadre-version")
            if not isinstance(name, str) or not isinstance(version, int):
                raise ValueError(f"{path} has no x-cadre-name / x-cadre-version")
            history.setdefault((kind, name), {})[version] = document
    return history


def check(found: Iterable[Contract], directory: Path) -> list[str]:
    """Every problem between the code's contracts and the committed ones (empty: all good)."""
    history = committed(directory)
    problems: list[str] = []
    in_code = set()
    for contract in found:
        in_code.add((contract.kind, contract.name))
        problems.extend(_check_one(contract, history.get((contract.kind, contract.name), {})))
    for kind, name in sorted(set(history) - in_code):
        files = ", ".join(f"{kind}/{name}.v{v}.json" for v in sorted(history[(kind, name)]))
        what = "message" if kind == MESSAGES else "agent type"
        problems.append(
            f"{name}: committed ({files}) but no {what} of that name is declared any more, so "
            "what is in flight or stored cannot be handled; restore it, or delete the files "
            "if it is retired on purpose"
        )
    return problems


def _check_one(contract: Contract, versions: dict[int, Schema]) -> list[str]:
    missing = (
        f"{contract.label}: no committed schema ({contract.path}); run `cadre schema export` "
        "and commit the schemas/ folder"
    )
    if not versions:
        return [missing]
    newest = max(versions)
    if contract.version < newest:
        return [
            f"{contract.label}: the code declares version {contract.version}, but v{newest} "
            "is committed; a version never goes down"
        ]
    problems = []
    step = "upcaster" if contract.kind == MESSAGES else "state migration"
    for old in range(min(versions), contract.version):
        if old not in contract.upcasts_from:
            problems.append(
                f"{contract.label}: no {step} from v{old} to v{old + 1} is registered, but "
                f"v{min(versions)} is committed (its documents may still be in flight or stored)"
            )
    if contract.version not in versions:
        return [*problems, missing]
    document = {k: v for k, v in versions[contract.version].items() if not k.startswith("x-")}
    for change in breaking_changes(document, contract.schema):
        problems.append(f"{contract.label}: {change}")
    return problems
