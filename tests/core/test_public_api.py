"""What `import cadre` offers, and what it must not cost (cold start on Functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cadre

FORBIDDEN_AT_IMPORT = ("azure", "openai", "opentelemetry.exporter", "aio_pika", "psycopg")


def test_all_names_every_export_and_each_resolves() -> None:
    init = ast.parse(Path(cadre.__file__).read_text())
    type_checking_names = {
        alias.asname or alias.name
        for node in ast.walk(init)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert set(cadre.__all__) == type_checking_names
    for name in cadre.__all__:
        value = getattr(cadre, name)
        assert getattr(value, "__module__", "cadre").startswith("cadre"), name
    assert set(cadre.__all__) <= set(dir(cadre))


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        cadre.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("cadre.NoSuchThing did not raise")


def imported_modules(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def test_import_cadre_alone_loads_no_heavy_dependency() -> None:
    modules = imported_modules("import cadre")
    assert not {m for m in modules if m.startswith(("pydantic", "asyncio", "sqlite3"))}


def test_using_the_runtime_loads_no_cloud_exporter_or_model_sdk() -> None:
    modules = imported_modules(
        "import cadre; from cadre import Agent, Message, LocalRuntime, Context, handler; "
        "import cadre.stores.sqlite, cadre.cli, agents"
    )
    assert "cadre.hosts.local" in modules  # the probe really loaded the runtime
    heavy = sorted(m for m in modules if m.startswith(FORBIDDEN_AT_IMPORT))
    assert heavy == []
