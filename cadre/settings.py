"""Every setting Cadre reads from the environment, in one typed object.

| variable                   | default            | meaning                                        |
| -------------------------- | ------------------ | ---------------------------------------------- |
| CADRE_APP                  | agents             | modules to import for agents (comma-separated) |
| CADRE_STATE                | .cadre/cadre.db    | the SQLite file of the local runtime           |
| CADRE_MAX_ATTEMPTS         | 5                  | handler attempts before dead-lettering         |
| CADRE_RETRY_BASE_SECONDS   | 0.5                | first retry delay (doubles each attempt)       |
| CADRE_RETRY_MAX_SECONDS    | 60                 | longest retry delay                            |
| CADRE_SEEN_LIMIT           | 64                 | handled envelope ids remembered per agent      |
| CADRE_CONCURRENCY          | 16                 | steps the local runtime runs at once           |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError
from .processing import RetryPolicy


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigurationError(f"{name}={value} must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    """Cadre's settings; `Settings.from_env()` reads them (see the module table)."""

    app_modules: tuple[str, ...] = ("agents",)
    state_path: Path = Path(".cadre/cadre.db")
    max_attempts: int = 5
    retry_base_seconds: float = 0.5
    retry_max_seconds: float = 60.0
    seen_limit: int = 64
    concurrency: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; an invalid value is a `ConfigurationError` naming it."""
        env = os.environ if env is None else env
        modules = tuple(m.strip() for m in env.get("CADRE_APP", "agents").split(",") if m.strip())
        return cls(
            app_modules=modules,
            state_path=Path(env.get("CADRE_STATE") or ".cadre/cadre.db"),
            max_attempts=_int(env, "CADRE_MAX_ATTEMPTS", 5),
            retry_base_seconds=_float(env, "CADRE_RETRY_BASE_SECONDS", 0.5),
            retry_max_seconds=_float(env, "CADRE_RETRY_MAX_SECONDS", 60.0),
            seen_limit=_int(env, "CADRE_SEEN_LIMIT", 64),
            concurrency=_int(env, "CADRE_CONCURRENCY", 16),
        )

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay=self.retry_base_seconds,
            max_delay=self.retry_max_seconds,
        )
