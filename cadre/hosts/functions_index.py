"""Which functions the Azure Functions app has: one Service Bus trigger per agent type.

The registry is the source of truth: importing the app modules (``CADRE_APP``, default
``agents``) registers every agent type, and each type gets a function and a subscription:

    agent type    function name       subscription   correlation filter (property = value)
    notebook      agent_notebook      notebook       cadre_agent_type = 'notebook'
    cadre.team    agent_cadre_team    cadre.team     cadre_agent_type = 'cadre.team'

Importing the app costs more than the rest of a cold start together (pydantic builds every
model), and the Functions worker imports ``function_app.py`` on every cold start just to list
the functions. So the list is kept in ``cadre-functions.json`` next to ``function_app.py``,
with a fingerprint of the app modules' source files: when the fingerprint matches, the list is
read from the file and nothing of the app is imported until the first message; when it does
not (an agent was added and the file not regenerated), the app is imported and the list
built from the registry, as if there were no file, and the file is rewritten when it can be
(it cannot on a read-only deployment package; that costs time, never correctness).

    python -m cadre.hosts.functions_index        # regenerate cadre-functions.json

This module imports no pydantic and no Azure SDK (it runs at every cold start).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

INDEX_FILE = "cadre-functions.json"
"""The function list, next to ``function_app.py`` (deployed with it)."""

CONNECTION = "ServiceBusConnection"
"""The connection setting name of every trigger (and of the sending side)."""

MAX_FUNCTION_NAME = 128
_NOT_IN_FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_]")
_INDEX_VERSION = 1
_NAMING_SOURCES = ("hosts/functions_index.py", "transports/servicebus.py")
"""Cadre's files that make function and subscription names (part of the fingerprint)."""


def function_name(agent_type: str) -> str:
    """``agent_`` + the type with every character other than letters, digits and ``_``
    replaced by ``_`` (Functions names allow ``[A-Za-z0-9_-]``; ``_`` keeps them readable as
    Python names); over 128 characters: cut, plus ``-`` and 8 hex digits of a hash."""
    name = "agent_" + _NOT_IN_FUNCTION_NAME.sub("_", agent_type)
    if len(name) <= MAX_FUNCTION_NAME:
        return name
    digest = hashlib.blake2b(agent_type.encode(), digest_size=4).hexdigest()
    return f"{name[: MAX_FUNCTION_NAME - len(digest) - 1]}-{digest}"


@dataclass(frozen=True, slots=True)
class AgentFunction:
    """One Service Bus trigger: the agent type it serves, its function and subscription
    (`cadre.transports.servicebus.subscription_name`, the rule infra/ uses too)."""

    agent_type: str
    function_name: str
    subscription: str


def _check_unique_function_names(functions: Iterable[AgentFunction]) -> None:
    owners: dict[str, str] = {}
    for fn in functions:
        key = fn.function_name.lower()  # Functions names are case-insensitive
        if key in owners:
            raise ConfigurationError(
                f"agent types {owners[key]!r} and {fn.agent_type!r} would share the function "
                f"name {fn.function_name!r}; rename one of them"
            )
        owners[key] = fn.agent_type


def _top_level_files(module: str) -> list[tuple[str, Path]]:
    """The source files of the top-level package (or module) of `module`, each with its
    path inside it, found without importing it."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin is None:
        raise ConfigurationError(f"cannot find the app module {module!r} (CADRE_APP)")
    origin = Path(spec.origin)
    if not spec.submodule_search_locations:
        return [(origin.name, origin)]
    files = (p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted((p.relative_to(origin.parent.parent).as_posix(), p) for p in files)


def fingerprint(modules: Sequence[str]) -> str:
    """A hash of the app modules' names and source files (every file of their top-level
    packages), of Cadre's version and of the files that make the names. Agent types
    declared in other packages the app imports are not watched: name those packages in
    ``CADRE_APP`` too."""
    from .. import __version__

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{_INDEX_VERSION}:{__version__}:{','.join(modules)}".encode())
    cadre_root = Path(__file__).resolve().parents[1]
    for name in _NAMING_SOURCES:
        digest.update(b"\0" + (cadre_root / name).read_bytes())
    seen: set[str] = set()
    for module in modules:
        for name, path in _top_level_files(module):
            if name not in seen:
                seen.add(name)
                digest.update(b"\0" + name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def registered_functions(modules: Sequence[str]) -> list[AgentFunction]:
    """Import the app modules and name a function for every agent type they register (and
    the inbox); `ConfigurationError` when two types would share a name."""
    from ..apps import load_app
    from ..infra import agent_types_document
    from ..registry import default_registry

    load_app(modules)
    rows = agent_types_document(default_registry)["agentTypes"]
    functions = [
        AgentFunction(row["agentType"], function_name(row["agentType"]), row["subscription"])
        for row in rows
    ]
    _check_unique_function_names(functions)
    return functions


@dataclass(frozen=True, slots=True)
class FunctionIndex:
    """The functions of one app, and whether they came from the index file."""

    functions: tuple[AgentFunction, ...]
    from_file: bool


def _with_app_on_path(root: Path) -> None:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def read_index(root: Path, modules: Sequence[str]) -> list[AgentFunction] | None:
    """The functions in ``root/cadre-functions.json`` if it matches the app's sources."""
    try:
        data = json.loads((root / INDEX_FILE).read_text())
        if data.get("fingerprint") != fingerprint(modules):
            return None
        functions = [
            AgentFunction(e["agent_type"], e["function_name"], e["subscription"])
            for e in data["functions"]
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return functions


def build_index(root: Path, modules: Sequence[str]) -> dict[str, object]:
    """The index file's content, from the registry (imports the app)."""
    from ..transports.servicebus import AGENT_TYPE_PROPERTY

    _with_app_on_path(root)
    functions = registered_functions(modules)
    return {
        "about": "Generated by `python -m cadre.hosts.functions_index`: one Service Bus "
        "trigger per agent type (see docs/azure.md).",
        "fingerprint": fingerprint(modules),
        "app_modules": list(modules),
        "connection": CONNECTION,
        "filter_property": AGENT_TYPE_PROPERTY,
        "functions": [
            {
                "agent_type": fn.agent_type,
                "function_name": fn.function_name,
                "subscription": fn.subscription,
            }
            for fn in functions
        ],
    }


def write_index(root: Path, modules: Sequence[str]) -> Path:
    """Regenerate ``root/cadre-functions.json`` from the registry."""
    path = root / INDEX_FILE
    path.write_text(json.dumps(build_index(root, modules), indent=2) + "\n")
    return path


def load_index(root: Path, modules: Sequence[str]) -> FunctionIndex:
    """The app's functions: from the index file when it is current, else from the registry
    (importing the app, and rewriting the file when the folder is writable)."""
    _with_app_on_path(root)
    functions = read_index(root, modules)
    if functions is not None:
        return FunctionIndex(tuple(functions), from_file=True)
    content = build_index(root, modules)
    # A read-only package cannot keep it: every cold start imports the app (correct, slower).
    with contextlib.suppress(OSError):
        (root / INDEX_FILE).write_text(json.dumps(content, indent=2) + "\n")
    entries: list[dict[str, str]] = content["functions"]  # type: ignore[assignment]
    return FunctionIndex(
        tuple(
            AgentFunction(e["agent_type"], e["function_name"], e["subscription"]) for e in entries
        ),
        from_file=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cadre.hosts.functions_index [ROOT]``: regenerate the index file."""
    from ..settings import Settings

    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0] if args else ".").resolve()
    path = write_index(root, Settings.from_env().app_modules)
    content = json.loads(path.read_text())
    print(f"{path}: {len(content['functions'])} functions")
    for entry in content["functions"]:
        print(f"  {entry['function_name']:<32} subscription {entry['subscription']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
