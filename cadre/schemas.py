"""Breaking changes between two JSON Schemas of one contract version (pure; no I/O).

    breaking_changes(committed, current)  ->  ["field 'seq' removed (or renamed)", ...]

A change is breaking when a document valid under the committed schema (an envelope already
in flight, a state already stored) may be rejected or lose data under the current one:
a field removed or renamed, a type narrowed (number -> integer, string -> enum, a union
member or ``null`` dropped), an optional field made required or a required field added,
an enum value removed, a constraint tightened, extra fields forbidden. Additions that old
documents satisfy (new optional fields, wider types, new enum values) are not breaking.

Understands what pydantic emits: ``properties``/``required``, ``type`` (also as a list),
``anyOf``/``oneOf``, ``enum``/``const``, ``$ref`` into ``$defs`` (recursive models too),
array ``items``/``prefixItems`` and ``additionalProperties``.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")
_EXACT = ("pattern", "format", "multipleOf")
_JSON_KIND = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def breaking_changes(committed: Schema, current: Schema) -> list[str]:
    """Every breaking change from `committed` to `current`, one readable line each."""
    comparison = _Comparison(committed, current, frozenset())
    comparison.node(committed, current, "")
    return comparison.changes


def _label(path: str) -> str:
    return f"field '{path}'" if path else "the document"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(alt: Schema) -> str:
    if "const" in alt or "enum" in alt:
        return "enum"
    if isinstance(alt.get("type"), str):
        return str(alt["type"])
    if "properties" in alt:
        return "object"
    return "any"


def _enum_values(alt: Schema) -> list[Any]:
    return [alt["const"]] if "const" in alt else list(alt.get("enum", []))


def _value_kinds(value: Any) -> set[str]:
    kind = _JSON_KIND.get(type(value), "any")
    return {"integer", "number"} if kind == "integer" else {kind}


def _covers(new: Schema, old: Schema) -> bool:
    """Whether `new`'s kind accepts every value of `old`'s kind (details are compared later)."""
    new_kind, old_kind = _kind(new), _kind(old)
    if new_kind == "any" or new_kind == old_kind:
        return True
    if old_kind == "enum":
        return all(new_kind in _value_kinds(v) for v in _enum_values(old))
    return old_kind == "integer" and new_kind == "number"


def _describe(alts: list[Schema]) -> str:
    names: list[str] = []
    for alt in alts:
        kind = _kind(alt)
        name = f"enum {_enum_values(alt)!r}" if kind == "enum" else kind
        if name not in names:
            names.append(name)
    return " | ".join(names)


class _Comparison:
    """One walk over a committed and a current schema, collecting breaking changes."""

    def __init__(self, old_root: Schema, new_root: Schema, visiting: frozenset[Any]) -> None:
        self.old_root, self.new_root = old_root, new_root
        self.visiting = visiting
        self.changes: list[str] = []

    def _resolve(self, root: Schema, node: Schema) -> tuple[Schema, str | None]:
        ref = None
        while isinstance(node, dict) and "$ref" in node:
            ref = str(node["$ref"])
            target = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        if isinstance(node, dict) and len(node.get("allOf", ())) == 1:
            return self._resolve(root, {**node["allOf"][0]})
        return (node if isinstance(node, dict) else {}), ref

    def _alternatives(
        self, root: Schema, node: Schema, ref: str | None = None
    ) -> list[tuple[Schema, str | None]]:
        """The union members of a node, each with the $ref it came through (if any)."""
        node, own_ref = self._resolve(root, node)
        ref = own_ref or ref
        members = node.get("anyOf") or node.get("oneOf")
        if members:
            return [alt for member in members for alt in self._alternatives(root, member, ref)]
        if isinstance(node.get("type"), list):
            return [({**node, "type": t}, ref) for t in node["type"]]
        return [(node, ref)]

    def node(self, old: Schema, new: Schema, path: str) -> None:
        """Compare one schema node of each side (a field's type, an item, the root)."""
        olds = self._alternatives(self.old_root, old)
        news = self._alternatives(self.new_root, new)
        changes: list[str] = []
        lost = False
        for alt, old_ref in olds:
            candidates = [(n, new_ref) for n, new_ref in news if _covers(n, alt)]
            if not candidates:
                lost = True
                continue
            options: list[list[str]] = []
            for candidate, new_ref in candidates:
                key = (old_ref, new_ref)
                if old_ref and new_ref and key in self.visiting:
                    options.append([])  # a recursive model: compared further up already
                    continue
                inner = _Comparison(self.old_root, self.new_root, self.visiting | {key})
                options.append(inner._pair(alt, candidate, path))
            fewest = min(options, key=len)  # the closest union member of the new schema
            changes.extend(fewest)
        if lost:
            old_desc, new_desc = _describe([a for a, _ in olds]), _describe([n for n, _ in news])
            changes.insert(0, f"{_label(path)} type narrowed from {old_desc} to {new_desc}")
        self.changes.extend(changes)

    def _pair(self, old: Schema, new: Schema, path: str) -> list[str]:
        """The breaking changes between two alternatives of compatible kinds."""
        if _kind(new) == "any":
            return []
        sub = self
        if _kind(old) == "enum" and _kind(new) == "enum":
            removed = [v for v in _enum_values(old) if v not in _enum_values(new)]
            if removed:
                values = ", ".join(repr(v) for v in removed)
                sub.changes.append(f"{_label(path)} enum value(s) {values} removed")
        sub._constraints(old, new, path)
        if _kind(new) == "object":
            sub._object(old, new, path)
        elif _kind(new) == "array":
            sub._array(old, new, path)
        return sub.changes

    def _constraints(self, old: Schema, new: Schema, path: str) -> None:
        for key in (*_LOWER_BOUNDS, *_UPPER_BOUNDS, *_EXACT):
            if key not in new:
                continue
            before, after = old.get(key), new[key]
            if before is None:
                tighter = True
            elif key in _LOWER_BOUNDS:
                tighter = after > before
            elif key in _UPPER_BOUNDS:
                tighter = after < before
            else:
                tighter = after != before
            if tighter:
                self.changes.append(
                    f"{_label(path)} constraint {key} narrowed from {before!r} to {after!r}"
                )

    def _object(self, old: Schema, new: Schema, path: str) -> None:
        old_props, new_props = old.get("properties", {}), new.get("properties", {})
        for name, schema in old_props.items():
            if name not in new_props:
                self.changes.append(f"{_label(_join(path, name))} removed (or renamed)")
            else:
                self.node(schema, new_props[name], _join(path, name))
        old_required = set(old.get("required", ()))
        for name in new.get("required", ()):
            if name in old_required:
                continue
            if name in old_props:
                self.changes.append(f"{_label(_join(path, name))} made required")
            else:
                self.changes.append(
                    f"required {_label(_join(path, name))} added (older documents lack it; "
                    "give it a default)"
                )
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if new_extra is False and old_extra is not False:
            self.changes.append(f"{_label(path)} no longer accepts extra fields")
        elif isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.node(old_extra, new_extra, _join(path, "*"))

    def _array(self, old: Schema, new: Schema, path: str) -> None:
        if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
            self.node(old["items"], new["items"], f"{path}[]")
        for i, (a, b) in enumerate(
            zip(old.get("prefixItems", ()), new.get("prefixItems", ()), strict=False)
        ):
            self.node(a, b, f"{path}[{i}]")
