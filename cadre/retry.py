"""The retry policy: how often and how patiently a failing handler is retried (its own
module, so settings can build one without loading the step)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing handler is retried before dead-lettering."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0
    jitter: float = 0.2

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential, capped, jittered."""
        raw = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return raw * random.uniform(1 - self.jitter, 1 + self.jitter)
