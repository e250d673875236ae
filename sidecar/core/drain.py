"""The pace of a drain: closing a pod's connections evenly over a time budget.

Closing every connection at once makes every client reconnect at once; a
:class:`DrainPlan` spreads the closes at a flat rate over the budget, less a tail
margin (the last 10 % by default) left for the last clients to reconnect elsewhere
before the pod is gone. At the end of the budget whatever is left is force-closed.

The caller (the event-loop glue) asks :meth:`DrainPlan.due` how many connections to
close now, closes them (with 1012 and a retry hint) and reports them with
:meth:`DrainPlan.closed`; clients that leave by themselves may be reported too, and
the plan then closes the rest at the same pace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_TAIL_MARGIN = 0.1
_CLOCK_SLACK_S = 1e-6  # float error at the planned instant of a close must not delay it


@dataclass(frozen=True, slots=True)
class DrainProgress:
    """Where a drain stands: connections closed, left, and seconds until the plan ends."""

    total: int
    closed: int
    left: int
    eta_s: float


@dataclass(slots=True)
class DrainPlan:
    """Closes ``total`` connections evenly between ``started_at`` and ``started_at +
    budget_s * (1 - tail_margin)``; force-closes what is left at ``started_at + budget_s``.

    ``min_spacing_s`` is the least time between two closes: a cap on the close rate. If
    the budget is too short for that pace, the rest is force-closed at the budget's end.
    """

    total: int
    budget_s: float
    started_at: float
    min_spacing_s: float = 0.0
    tail_margin: float = DEFAULT_TAIL_MARGIN
    _closed: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError(f"a drain cannot close {self.total} connections")
        if not self.budget_s >= 0:
            raise ValueError(f"drain budget_s must be >= 0, got {self.budget_s}")
        if not self.min_spacing_s >= 0:
            raise ValueError(f"drain min_spacing_s must be >= 0, got {self.min_spacing_s}")
        if not 0 <= self.tail_margin < 1:
            raise ValueError(f"drain tail_margin must be in [0, 1), got {self.tail_margin}")

    @property
    def deadline(self) -> float:
        """When the budget ends: anything still open is force-closed."""
        return self.started_at + self.budget_s

    @property
    def spacing_s(self) -> float:
        """The planned time between two closes."""
        if self.total == 0:
            return 0.0
        window = self.budget_s * (1.0 - self.tail_margin)
        return max(window / self.total, self.min_spacing_s)

    @property
    def left(self) -> int:
        """Connections not reported closed yet."""
        return self.total - self._closed

    def target(self, now: float) -> int:
        """How many connections the plan has closed by ``now``, in all."""
        elapsed = now - self.started_at
        if elapsed >= self.budget_s:
            return self.total
        if elapsed <= 0 or self.total == 0:
            return 0
        return min(self.total, math.floor((elapsed + _CLOCK_SLACK_S) / self.spacing_s))

    def due(self, now: float) -> int:
        """How many more connections to close now (the plan's target less those reported
        with :meth:`closed`)."""
        return max(0, self.target(now) - self._closed)

    def closed(self, n: int = 1) -> None:
        """Report ``n`` connections closed (or gone by themselves); at most ``total`` count."""
        if n < 0:
            raise ValueError(f"cannot report {n} connections closed")
        self._closed = min(self.total, self._closed + n)

    def force_due(self, now: float) -> bool:
        """Whether the budget is spent with connections left: close them all now."""
        return now >= self.deadline and self.left > 0

    def next_wakeup(self) -> float | None:
        """When the next close falls due (maybe already past); None once all are closed."""
        if self.left == 0:
            return None
        return min(self.deadline, self.started_at + (self._closed + 1) * self.spacing_s)

    def progress(self, now: float) -> DrainProgress:
        """Closed and left so far, and the seconds until the plan has closed everything."""
        left = self.left
        if left == 0:
            eta = 0.0
        else:
            ends_at = min(self.deadline, self.started_at + self.total * self.spacing_s)
            eta = max(0.0, ends_at - now)
        return DrainProgress(self.total, self._closed, left, eta)
