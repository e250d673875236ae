"""Reconnect delays: exponential backoff with full jitter, and server retry hints.

``delay(attempt) = uniform(0, min(cap, base * 2**attempt))``: after a pod is lost,
its clients' retries spread over the whole window instead of arriving together,
and stay spread once the window reaches the cap (it never collapses onto the
cap itself). A server hint (the ``retry_after_ms`` of a 1012/1013 close, or an
HTTP ``Retry-After``) is a floor: the client waits the hint plus a jittered
share of the current window. After ``max_elapsed_s`` without success, give up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0
    max_elapsed_s: float | None = None  # None: retry forever
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    elapsed_s: float = 0.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("backoff needs 0 < base <= cap")

    def window(self) -> float:
        return float(min(self.cap_s, self.base_s * 2.0 ** min(self.attempt, 62)))

    def next_delay(self, hint_s: float | None = None) -> float | None:
        """The next wait, or None when ``max_elapsed_s`` is used up."""
        jitter = self.rng.uniform(0.0, self.window())
        delay = jitter if hint_s is None else hint_s + jitter * 0.5
        if self.max_elapsed_s is not None and self.elapsed_s + delay > self.max_elapsed_s:
            return None
        self.attempt += 1
        self.elapsed_s += delay
        return delay

    def reset(self) -> None:
        """A connection held: start over."""
        self.attempt = 0
        self.elapsed_s = 0.0
