"""When a long-running command shows progress: redrawn on a terminal, sparse elsewhere.

On a terminal the line is redrawn at every poll (``\\r``). Anywhere else (CI logs,
pipes) a new line is written only when progress crosses another ``step`` (10 %) or
``every_s`` (5 s) have passed since the last line, so logs stay short.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ProgressLines:
    def __init__(
        self,
        tty: bool,
        step: float = 0.1,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tty = tty
        self._step = step
        self._every_s = every_s
        self._clock = clock
        self._last_at: float | None = None
        self._last_bucket = -1

    def due(self, done: int, total: int) -> bool:
        """Whether to show the line for ``done`` of ``total`` now."""
        if self.tty:
            return True
        now = self._clock()
        bucket = int((done / total if total else 1.0) / self._step + 1e-9)
        if (
            self._last_at is None
            or bucket > self._last_bucket
            or now - self._last_at >= self._every_s
        ):
            self._last_at, self._last_bucket = now, bucket
            return True
        return False

    def render(self, line: str) -> str:
        """What to write for ``line``: a redraw on a terminal, a new line elsewhere."""
        return f"\r{line}" if self.tty else f"{line}\n"
