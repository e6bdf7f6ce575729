"""Which functions the Azure Functions app has: one Service Bus trigger per agent type.

The registry is the source of truth: importing the app modules (``CADRE_APP``, default
``agents``) registers every agent type, and each type gets a function and a subscription:

    agent type    function name       subscription   subscription filter
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

INBOX_TYPE = "cadre.inbox"
"""The built-in inbox (replies to messages sent from outside): present in every app."""

MAX_SUBSCRIPTION = 50
MAX_FUNCTION_NAME = 128
_NOT_IN_FUNCTION_NAME = re.compile(r"[^A-Za-z0-9_]")
_INDEX_VERSION = 1


def _hashed(text: str, limit: int) -> str:
    """`text` cut to fit `limit` with a hash of the whole of it (stable, distinct)."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return f"{text[: limit - len(digest) - 1]}-{digest}"


def function_name(agent_type: str) -> str:
    """``agent_`` + the type with every character other than letters, digits and ``_``
    replaced by ``_`` (Functions names allow ``[A-Za-z0-9_-]``; ``_`` keeps them readable as
    Python names); over 128 characters: cut, plus ``-`` and 8 hex digits of a hash."""
    name = "agent_" + _NOT_IN_FUNCTION_NAME.sub("_", agent_type)
    return name if len(name) <= MAX_FUNCTION_NAME else _hashed(name, MAX_FUNCTION_NAME)


def subscription_name(agent_type: str) -> str:
    """The agent type itself (agent types use only letters, digits, ``_``, ``.`` and ``-``,
    all allowed in subscription names); over 50 characters: the first 41, ``-`` and 8 hex
    digits of a hash of the whole type."""
    if len(agent_type) <= MAX_SUBSCRIPTION:
        return agent_type
    return _hashed(agent_type, MAX_SUBSCRIPTION)


def subscription_filter(agent_type: str) -> str:
    """The SQL filter of the agent type's subscription."""
    return "cadre_agent_type = '{}'".format(agent_type.replace("'", "''"))


@dataclass(frozen=True, slots=True)
class AgentFunction:
    """One Service Bus trigger: the agent type it serves, its function and subscription."""

    agent_type: str
    function_name: str
    subscription: str

    @classmethod
    def for_type(cls, agent_type: str) -> AgentFunction:
        """The function of `agent_type`, named by the rules above."""
        return cls(agent_type, function_name(agent_type), subscription_name(agent_type))


def agent_functions(agent_types: Iterable[str]) -> list[AgentFunction]:
    """One function per type (sorted); two types that would share a function or
    subscription name are a `ConfigurationError` naming both."""
    functions = [AgentFunction.for_type(t) for t in sorted(set(agent_types))]
    for attribute in ("function_name", "subscription"):
        owners: dict[str, str] = {}
        for fn in functions:
            name = getattr(fn, attribute)
            if name in owners:
                raise ConfigurationError(
                    f"agent types {owners[name]!r} and {fn.agent_type!r} would share the "
                    f"{attribute.replace('_', ' ')} {name!r}; rename one of them"
                )
            owners[name] = fn.agent_type
    return functions


def _top_level_files(module: str) -> list[Path]:
    """The source files of the top-level package (or module) of `module`, without
    importing it."""
    spec = importlib.util.find_spec(module.split(".")[0])
    if spec is None or spec.origin is None:
        raise ConfigurationError(f"cannot find the app module {module!r} (CADRE_APP)")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:
        return sorted(p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [origin]


def fingerprint(modules: Sequence[str]) -> str:
    """A hash of the app modules' names and source files, and of Cadre's version."""
    from .. import __version__

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{_INDEX_VERSION}:{__version__}:{','.join(modules)}".encode())
    seen: set[Path] = set()
    for module in modules:
        for path in _top_level_files(module):
            if path not in seen:
                seen.add(path)
                digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def registered_types(modules: Sequence[str]) -> list[str]:
    """Import the app modules and list every agent type they register (and the inbox)."""
    from ..cli import load_app
    from ..registry import default_registry

    load_app(modules)
    return sorted({*default_registry.types, INBOX_TYPE})


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
    except (OSError, ValueError):
        return None
    if data.get("fingerprint") != fingerprint(modules):
        return None
    types = [entry["agent_type"] for entry in data.get("functions", ())]
    return agent_functions(types)


def build_index(root: Path, modules: Sequence[str]) -> dict[str, object]:
    """The index file's content, from the registry (imports the app)."""
    _with_app_on_path(root)
    functions = agent_functions(registered_types(modules))
    return {
        "about": "Generated by `python -m cadre.hosts.functions_index`: one Service Bus "
        "trigger per agent type (see docs/azure.md).",
        "fingerprint": fingerprint(modules),
        "app_modules": list(modules),
        "connection": CONNECTION,
        "functions": [
            {
                "agent_type": fn.agent_type,
                "function_name": fn.function_name,
                "subscription": fn.subscription,
                "filter": subscription_filter(fn.agent_type),
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
    types = [entry["agent_type"] for entry in content["functions"]]  # type: ignore[attr-defined]
    return FunctionIndex(tuple(agent_functions(types)), from_file=False)


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
