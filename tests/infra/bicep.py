"""Reading Bicep without the Bicep compiler (which cannot be installed here).

Two independent parsers from PyPI: ``tree-sitter-bicep`` (a strict concrete syntax tree: its
ERROR and MISSING nodes are the syntax errors; also used to find which names are referenced)
and ``pycep-parser`` (a lark grammar that yields params, variables, resources, modules and
outputs as plain dicts: the structure the consistency checks read).
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import tree_sitter
import tree_sitter_bicep
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"


@cache
def _tree_sitter() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_bicep.language()))


def bicep_files(infra: Path = INFRA) -> list[Path]:
    """Every .bicep file under `infra`."""
    return sorted(infra.rglob("*.bicep"))


def syntax_errors(text: str) -> list[str]:
    """Where the tree-sitter grammar finds an error or a missing token ("line:col ...")."""
    tree = _tree_sitter().parse(text.encode())
    found: list[str] = []

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "ERROR" or node.is_missing:
            line, col = node.start_point
            kind = f"missing {node.type}" if node.is_missing else "unexpected"
            snippet = (node.text or b"").decode(errors="replace")[:40]
            found.append(f"{line + 1}:{col + 1} {kind} {snippet!r}")
            return
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    if tree.root_node.has_error and not found:
        found.append("the parse tree has an error")
    return found


@cache
def _pycep() -> BicepParser:
    return BicepParser()


@lru_cache(maxsize=256)
def _structure(text: str) -> dict[str, Any]:
    result: dict[str, Any] = _pycep().parse(text=text)
    return result


def structure(text: str) -> dict[str, Any]:
    """pycep's dict of the file (raises on a syntax error); a copy, callers may change it."""
    return copy.deepcopy(_structure(text))


def references(text: str) -> Counter[str]:
    """How often each name is referenced: identifiers that are not the name being declared
    and not an object property key."""
    tree = _tree_sitter().parse(text.encode())
    counts: Counter[str] = Counter()
    declarations = {
        "parameter_declaration",
        "variable_declaration",
        "resource_declaration",
        "module_declaration",
        "output_declaration",
    }

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "identifier":
            parent = node.parent
            first = parent.named_children[0] if parent and parent.named_children else None
            is_name = parent is not None and parent.type in declarations and first == node
            is_key = parent is not None and parent.type == "object_property" and first == node
            if not (is_name or is_key):
                counts[(node.text or b"").decode()] += 1
        for child in node.named_children:
            walk(child)

    walk(tree.root_node)
    # string interpolation: '${name}' holds the identifier as a child, walked above
    return counts


def output_references(text: str) -> set[tuple[str, str]]:
    """Every ``symbol.outputs.name`` in the file, as (symbol, name)."""
    tree = _tree_sitter().parse(text.encode())
    found: set[tuple[str, str]] = set()

    def walk(node: tree_sitter.Node) -> None:
        if node.type == "member_expression":
            inner = node.named_children[0]
            if inner.type == "member_expression" and len(inner.named_children) == 2:
                symbol, middle = inner.named_children
                if symbol.type == "identifier" and (middle.text or b"") == b"outputs":
                    name = (node.named_children[1].text or b"").decode()
                    found.add(((symbol.text or b"").decode(), name))
        for child in node.named_children:
            walk(child)

    walk(tree.root_node)
    return found


def body(declaration: dict[str, Any]) -> dict[str, Any]:
    """The body of a resource or module, through ``if (...)`` and ``for`` wrappers."""
    config: dict[str, Any] = declaration["config"]
    while "config" in config and ("condition" in config or "loop_type" in config):
        config = config["config"]
    return config


def literal_keys(obj: dict[str, Any]) -> set[str]:
    """The keys of a Bicep object literal (quoted keys unquoted)."""
    return {k.strip("'") for k in obj}


@dataclass(frozen=True)
class BicepFile:
    """One parsed .bicep file."""

    path: Path
    text: str
    parsed: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> BicepFile:
        text = path.read_text()
        return cls(path, text, structure(text))

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.parsed.get("parameters", {}))

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self.parsed.get("variables", {}))

    @property
    def resources(self) -> dict[str, Any]:
        return dict(self.parsed.get("resources", {}))

    @property
    def modules(self) -> dict[str, Any]:
        return dict(self.parsed.get("modules", {}))

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.parsed.get("outputs", {}))

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Symbol -> body of every resource of `resource_type` (case-insensitive)."""
        return {
            symbol: body(decl)
            for symbol, decl in self.resources.items()
            if decl["type"].lower() == resource_type.lower()
        }

    def module_file(self, symbol: str) -> Path:
        """The file a local module declaration points at."""
        return (self.path.parent / self.modules[symbol]["detail"]["path"]).resolve()


def load_infra(infra: Path = INFRA) -> dict[str, BicepFile]:
    """Every .bicep file under `infra`, by path relative to it (``main.bicep``,
    ``modules/servicebus.bicep``, ...)."""
    return {p.relative_to(infra).as_posix(): BicepFile.load(p) for p in bicep_files(infra)}


def parameters_file(infra: Path = INFRA) -> dict[str, Any]:
    """The ``parameters`` of infra/main.parameters.json."""
    data: dict[str, Any] = json.loads((infra / "main.parameters.json").read_text())
    return dict(data["parameters"])
