"""The breaking-change guard: each kind of breaking change is caught and named, additive
changes pass, `cadre schema export` is deterministic and `cadre schema check` fails CI."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from cadre.cli import main
from cadre.schema_files import (
    check,
    collect,
    committed,
    export,
    message_contract,
    state_contract,
)
from cadre.schemas import breaking_changes


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Options(BaseModel):
    loud: bool = False


class PingV1(BaseModel):
    seq: float
    note: str | None = None
    colour: Colour = Colour.RED
    tags: list[str] = []
    kind: str = "plain"
    options: Options = Options()


def changes(new: type[BaseModel], old: type[BaseModel] = PingV1) -> list[str]:
    return breaking_changes(old.model_json_schema(), new.model_json_schema())


class Removed(BaseModel):
    note: str | None = None
    colour: Colour = Colour.RED
    tags: list[str] = []
    kind: str = "plain"
    options: Options = Options()


class Renamed(Removed):
    sequence: float


class NarrowedNumber(Removed):
    seq: int


class NullDropped(BaseModel):
    seq: float
    note: str = ""


class MadeRequired(BaseModel):
    seq: float
    note: str | None


class OneColour(StrEnum):
    RED = "red"


class EnumValueRemoved(BaseModel):
    seq: float
    colour: OneColour = OneColour.RED


class StringToEnum(BaseModel):
    seq: float
    kind: Literal["plain", "fancy"] = "plain"


class ItemsNarrowed(BaseModel):
    seq: float
    tags: list[int] = []


class StrictOptions(BaseModel):
    loud: bool


class NestedMadeRequired(BaseModel):
    seq: float
    options: StrictOptions = StrictOptions(loud=False)


class RequiredAdded(PingV1):
    priority: int


class Constrained(BaseModel):
    seq: float = Field(ge=0)


class Forbidding(PingV1):
    model_config = ConfigDict(extra="forbid")


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        (Removed, "field 'seq' removed (or renamed)"),
        (Renamed, "field 'seq' removed (or renamed)"),
        (NarrowedNumber, "field 'seq' type narrowed from number to integer"),
        (NullDropped, "field 'note' type narrowed from string | null to string"),
        (MadeRequired, "field 'note' made required"),
        (EnumValueRemoved, "field 'colour' enum value(s) 'blue' removed"),
        (StringToEnum, "field 'kind' type narrowed from string to enum ['plain', 'fancy']"),
        (ItemsNarrowed, "field 'tags[]' type narrowed from string to integer"),
        (NestedMadeRequired, "field 'options.loud' made required"),
        (RequiredAdded, "required field 'priority' added"),
        (Constrained, "field 'seq' constraint minimum narrowed from None to 0"),
        (Forbidding, "the document no longer accepts extra fields"),
    ],
)
def test_each_kind_of_breaking_change_is_named(new: type[BaseModel], expected: str) -> None:
    found = changes(new)
    assert any(line.startswith(expected) for line in found), found


class Additive(BaseModel):
    seq: float | str
    note: str | None = None
    colour: Colour | None = Colour.RED
    tags: list[str | int] = []
    kind: str = "plain"
    options: Options = Options()
    priority: int = 0
    extra_notes: list[str] | None = None


class MoreColours(StrEnum):
    RED = "red"
    BLUE = "blue"
    GREEN = "green"


class WiderEnum(BaseModel):
    seq: float
    colour: MoreColours = MoreColours.RED
    note: str | None = None
    tags: list[str] = []
    kind: str = "plain"
    options: Options = Options()


def test_additive_changes_pass() -> None:
    assert changes(Additive) == []
    assert changes(WiderEnum) == []
    assert changes(PingV1) == []


def test_narrowed_integer_to_number_is_widening() -> None:
    assert changes(PingV1, old=NarrowedNumber) == []  # int -> float accepts every int


class Tree(BaseModel):
    label: str
    children: list[Tree] = []
    parent: Tree | None = None


class TreeNarrowed(BaseModel):
    label: str
    children: list[TreeNarrowed] = []
    parent: TreeNarrowed | None = None
    weight: int


def test_recursive_models_terminate_and_are_compared() -> None:
    assert breaking_changes(Tree.model_json_schema(), Tree.model_json_schema()) == []
    found = breaking_changes(Tree.model_json_schema(), TreeNarrowed.model_json_schema())
    assert found == ["required field 'weight' added (older documents lack it; give it a default)"]


leaves = st.sampled_from(
    [{"type": t} for t in ("string", "integer", "number", "boolean", "null")]
    + [{"enum": ["a", "b"], "type": "string"}, {"const": 1}, {}]
)
names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)
schemas = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.builds(lambda s: {"type": "array", "items": s}, inner),
        st.builds(lambda ms: {"anyOf": ms}, st.lists(inner, min_size=2, max_size=3)),
        st.dictionaries(names, inner, min_size=1, max_size=4).flatmap(
            lambda props: st.builds(
                lambda req: {"type": "object", "properties": props, "required": req},
                st.lists(st.sampled_from(sorted(props)), unique=True),
            )
        ),
    ),
    max_leaves=12,
)


@given(schemas)
def test_a_schema_never_breaks_itself(schema: dict[str, Any]) -> None:
    assert breaking_changes(schema, schema) == []


@given(schemas, leaves)
def test_adding_a_union_member_is_never_breaking(schema: dict[str, Any], extra: Any) -> None:
    assert breaking_changes(schema, {"anyOf": [schema, extra]}) == []


@given(st.dictionaries(names, schemas, min_size=1, max_size=4), st.data())
def test_removing_any_field_or_adding_an_optional_one(props: Any, data: Any) -> None:
    old = {"type": "object", "properties": props, "required": []}
    added = {**old, "properties": {**props, "zzzzz": {"type": "string"}}}
    assert breaking_changes(old, added) == []
    gone = data.draw(st.sampled_from(sorted(props)))
    smaller = {**old, "properties": {k: v for k, v in props.items() if k != gone}}
    assert f"field '{gone}' removed (or renamed)" in breaking_changes(old, smaller)


class PingV2(BaseModel):
    sequence: int


class CounterState(BaseModel):
    total: int = 0


class CounterStateV2(BaseModel):
    state_version: ClassVar[int] = 2
    sum: int = 0


def test_export_is_deterministic_and_check_names_contract_version_and_field(
    tmp_path: Path,
) -> None:
    v1 = [message_contract(PingV1, "demo.Ping", 1), state_contract("counter", CounterState)]
    assert len(export(v1, tmp_path)) == 2
    first = (tmp_path / "messages/demo.Ping.v1.json").read_text()
    assert first.endswith("}\n")
    document = json.loads(first)
    assert (document["x-cadre-name"], document["x-cadre-version"]) == ("demo.Ping", 1)
    assert export(v1, tmp_path) == []  # unchanged code: no file written
    assert (tmp_path / "messages/demo.Ping.v1.json").read_text() == first
    assert check(v1, tmp_path) == []
    assert check([message_contract(Removed, "demo.Ping", 1)], tmp_path)[0] == (
        "demo.Ping v1: field 'seq' removed (or renamed)"
    )
    state = check([state_contract("counter", CounterStateV2)], tmp_path)
    assert state[0].startswith("state of counter v2: no state migration from v1 to v2")


def test_check_demands_an_upcaster_from_every_committed_version(tmp_path: Path) -> None:
    export([message_contract(PingV1, "demo.Ping", 1)], tmp_path)
    bumped = [message_contract(PingV2, "demo.Ping", 2)]
    problems = check(bumped, tmp_path)
    assert problems[0].startswith("demo.Ping v2: no upcaster from v1 to v2 is registered")
    assert "no committed schema (messages/demo.Ping.v2.json)" in problems[1]
    released = [message_contract(PingV2, "demo.Ping", 2, upcasts_from=[1])]
    export(released, tmp_path)
    assert check(released, tmp_path) == []
    assert sorted(committed(tmp_path)[("messages", "demo.Ping")]) == [1, 2]  # history kept
    assert (
        "a version never goes down"
        in check([message_contract(PingV1, "demo.Ping", 1)], tmp_path)[0]
    )


def test_check_fails_on_uncommitted_and_on_vanished_contracts(tmp_path: Path) -> None:
    export([message_contract(PingV1, "demo.Ping", 1)], tmp_path)
    problems = check([message_contract(PingV1, "demo.Other", 1)], tmp_path)
    assert problems == [
        "demo.Other v1: no committed schema (messages/demo.Other.v1.json); run `cadre schema "
        "export` and commit the schemas/ folder",
        "demo.Ping: committed (messages/demo.Ping.v1.json) but no message of that name is "
        "declared any more, so what is in flight or stored cannot be handled; restore it, or "
        "delete the files if it is retired on purpose",
    ]


def test_cli_export_then_check_passes_and_a_breaking_change_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = str(tmp_path / "schemas")
    assert main(["--app", "agents", "schema", "export", "--dir", folder]) == 0
    assert main(["--app", "agents", "schema", "check", "--dir", folder]) == 0
    note = tmp_path / "schemas/messages/app.AddNote.v1.json"
    committed_note = json.loads(note.read_text())
    committed_note["properties"]["author"] = {"type": "string"}  # the code "removed" it
    note.write_text(json.dumps(committed_note))
    capsys.readouterr()
    assert main(["--app", "agents", "schema", "check", "--dir", folder]) == 1
    err = capsys.readouterr().err
    assert "app.AddNote v1: field 'author' removed (or renamed)" in err
    assert "docs/contracts.md" in err


def test_collect_covers_named_messages_and_every_stateful_agent_type() -> None:
    from cadre.registry import Registry
    from tests.support.contracts import Counter

    agents = Registry()
    agents.register(Counter, type="counter")
    found = {(c.kind, c.name): c for c in collect(agents=agents)}
    assert ("messages", "test.Add") in found
    assert ("state", "counter") in found and ("state", "cadre.inbox") in found
    assert not any("<locals>" in name for _, name in found)
    assert found[("state", "counter")].schema["properties"]["total"]["type"] == "integer"
