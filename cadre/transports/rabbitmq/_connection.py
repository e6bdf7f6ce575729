"""The broker connection: aio-pika loaded lazily, and a robust connection that backs off."""

from __future__ import annotations

import functools
import time
from typing import Any

from ...errors import ConfigurationError

RECONNECT_FIRST = 0.5
RECONNECT_MAX = 30.0


def aio_pika() -> Any:
    """The aio_pika module, or a `ConfigurationError` naming the extra to install."""
    try:
        import aio_pika as module
    except ImportError:
        raise ConfigurationError(
            "the RabbitMQ transport needs aio-pika: pip install -e '.[workers]'"
        ) from None
    return module


def reconnect_delay(outage: float) -> float:
    """Seconds to wait before the next reconnect attempt, `outage` seconds after the
    connection was lost: `RECONNECT_FIRST` at first, then half the outage so far, at most
    `RECONNECT_MAX`. A broker restart is retried at once; a long outage is not hammered."""
    return min(RECONNECT_MAX, max(RECONNECT_FIRST, outage / 2))


@functools.cache
def backoff_connection() -> Any:
    """aio-pika's robust connection, waiting `reconnect_delay` between reconnect attempts
    (aio-pika's own waits a fixed interval)."""
    from aio_pika.robust_connection import RobustConnection

    class BackoffConnection(RobustConnection):
        _lost_at: float | None = None

        @property
        def reconnect_interval(self) -> float:
            if self.connected.is_set():  # up: the next outage starts from the first delay
                self._lost_at = None
                return RECONNECT_FIRST
            now = time.monotonic()
            if self._lost_at is None:
                self._lost_at = now
            return reconnect_delay(now - self._lost_at)

        @reconnect_interval.setter
        def reconnect_interval(self, value: float) -> None:
            pass  # RobustConnection sets its fixed interval here; the property replaces it

    return BackoffConnection
