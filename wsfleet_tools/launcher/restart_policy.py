"""When to restart a child that died: Kubernetes' restart backoff, as a pure class.

A child that exits unexpectedly is restarted after a delay that starts at
:attr:`RestartSettings.initial_backoff_s` and doubles on every further exit, up to
:attr:`RestartSettings.max_backoff_s` (each delay jittered so that children that died
together do not all come back in the same instant). A child that ran for
:attr:`RestartSettings.reset_after_s` before it died had recovered: its backoff starts
over. ``crash_loop_restarts`` exits within ``crash_loop_window_s`` make it *crash-looping*:
the caller reports that loudly and keeps retrying at the capped pace (never gives up, so
a fixed cause — a freed port, a restarted dependency — heals the fleet by itself).

No clock and no randomness of its own: the caller passes ``now`` and may pass the random
source, so the tests drive it with a fake clock.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

INITIAL_BACKOFF_S = 0.5  # the first restart's delay
MAX_BACKOFF_S = 30.0  # the delay doubles up to this cap
RESET_AFTER_S = 60.0  # a child that ran this long before dying starts its backoff over
CRASH_LOOP_RESTARTS = 5  # this many exits ...
CRASH_LOOP_WINDOW_S = 60.0  # ... within this window: crash-looping (reported)
JITTER = 0.2  # each delay is scaled by a random factor in [1 - JITTER, 1 + JITTER]


@dataclass(frozen=True)
class RestartSettings:
    initial_backoff_s: float = INITIAL_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    reset_after_s: float = RESET_AFTER_S
    crash_loop_restarts: int = CRASH_LOOP_RESTARTS
    crash_loop_window_s: float = CRASH_LOOP_WINDOW_S
    jitter: float = JITTER

    def __post_init__(self) -> None:
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("0 < initial_backoff_s <= max_backoff_s")
        if self.crash_loop_restarts < 1 or self.crash_loop_window_s <= 0:
            raise ValueError("crash_loop_restarts >= 1 and crash_loop_window_s > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("0 <= jitter < 1")


@dataclass(frozen=True)
class RestartDecision:
    """What to do about one exit: wait ``delay_s``, then start the child again."""

    delay_s: float
    exits_in_window: int  # exits within the crash-loop window, this one included
    crash_looping: bool
    ran_s: float  # how long the process that exited had run


class RestartPolicy:
    """One child's restart history. Call :meth:`started` when a process of it starts and
    :meth:`exited` when it dies unexpectedly."""

    def __init__(
        self, settings: RestartSettings | None = None, rand: Callable[[], float] = random.random
    ) -> None:
        self.settings = settings or RestartSettings()
        self._rand = rand
        self._failures = 0  # consecutive short-lived runs: the backoff's exponent
        self._started_at: float | None = None
        self._exits: deque[float] = deque()

    @property
    def failures(self) -> int:
        return self._failures

    def started(self, now: float) -> None:
        self._started_at = now

    def exited(self, now: float) -> RestartDecision:
        settings = self.settings
        ran_s = now - self._started_at if self._started_at is not None else 0.0
        if ran_s >= settings.reset_after_s:
            self._failures = 0
        backoff = min(
            settings.max_backoff_s, settings.initial_backoff_s * 2 ** min(self._failures, 62)
        )
        factor = 1 + settings.jitter * (2 * self._rand() - 1)
        delay_s = min(settings.max_backoff_s, backoff * factor)
        self._failures += 1
        self._exits.append(now)
        while self._exits and self._exits[0] <= now - settings.crash_loop_window_s:
            self._exits.popleft()
        exits = len(self._exits)
        return RestartDecision(delay_s, exits, exits >= settings.crash_loop_restarts, ran_s)
