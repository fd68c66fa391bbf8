"""Per-route knobs of the job runtime, and the retry backoff they imply."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["JobOptions", "backoff_delay"]


@dataclass(frozen=True, slots=True)
class JobOptions:
    """How one route consumes: retries, timeouts, batching and concurrency.

    ``max_attempts`` counts handled failures (an exception the runtime saw). A process that dies
    mid-handler is not an attempt, but every delivery counts towards ``max_deliveries``, so a
    message that kills its consumer cannot loop forever.

    ``visibility_timeout`` is how long a dead consumer's entries wait before another consumer
    takes them over. Live consumers extend the lease of every entry they hold every third of it,
    so a handler may run far longer (up to ``timeout``) without being reclaimed.
    """

    max_attempts: int = 5
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    jitter: float = 0.2
    timeout: float = 30.0
    concurrency: int = 16
    read_count: int = 64
    block_ms: int = 1000
    visibility_timeout: float = 15.0
    max_deliveries: int | None = None

    @property
    def delivery_cap(self) -> int:
        """Deliveries after which an entry is dead-lettered whatever its attempts."""
        return self.max_deliveries or self.max_attempts + 5


def backoff_delay(options: JobOptions, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``failures``-th failure: base * 2^(n-1), capped, with jitter."""
    delay = min(options.backoff_cap, options.backoff_base * 2.0 ** max(0, failures - 1))
    spread = delay * options.jitter
    jittered: float = (rng or random).uniform(-spread, spread)
    return max(0.0, delay + jittered)
