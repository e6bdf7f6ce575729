"""State stores: one protocol (`StateStore`), one module per technology."""

from .base import AgentRecord, DeadLetter, StateStore
from .memory import MemoryStore

__all__ = ["AgentRecord", "DeadLetter", "MemoryStore", "SQLiteStore", "StateStore"]


def __getattr__(name: str) -> object:
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
