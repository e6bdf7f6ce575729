"""Loading the app: the modules that declare its agents and teams (``CADRE_APP``).

Every host loads the app before it runs or serves anything (`cadre` commands, the
Functions app, `cadre serve`, the function index); importing a module registers its agent
types in `cadre.default_registry`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigurationError


def load_app(modules: Sequence[str]) -> None:
    """Import the app's agent modules (from the current folder) so their types register."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name.split(".")[0]:
                raise ConfigurationError(
                    f"cannot import the app module {name!r} from {Path.cwd()}; run cadre from "
                    "the app's folder or set CADRE_APP"
                ) from None
            raise
