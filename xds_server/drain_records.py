"""Fleet drains as data: which pods, the budget, when it started, what each pod reported.

Pure, so that the fleet page's summary (:mod:`xds_server.fleet_summary`) can read drains
without reaching the HTTP shell that starts them (:mod:`xds_server.fleet_admin`). Times
are given by the caller: a record never reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wsfleet.registry import PodRecord

FINISHED_DRAIN_STATES = ("drained", "error")  # a pod in either has nothing left to drain


@dataclass
class DrainRecord:
    """One fleet drain: which pods, the budget, when it started (wall clock, from the
    caller's clock) and the last progress each pod reported."""

    drain_id: str
    pods: list[PodRecord]
    budget_s: float
    started_at: float
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Every pod reported drained or failed (a pod not heard from yet is running)."""
        return all(
            self.progress.get(pod.pod_id, {}).get("state") in FINISHED_DRAIN_STATES
            for pod in self.pods
        )

    def to_json(self) -> dict[str, Any]:
        """The drain as ``GET /drain/{id}`` answers it: totals over the pods' last reports."""
        total = sum(int(p.get("total", 0)) for p in self.progress.values())
        left = sum(int(p.get("left", 0)) for p in self.progress.values())
        return {
            "drain_id": self.drain_id,
            "state": "done" if self.finished else "running",
            "budget_s": self.budget_s,
            "started_at": self.started_at,
            "total": total,
            "closed": max(0, total - left),
            "left": left,
            "eta_s": max((float(p.get("eta_s", 0)) for p in self.progress.values()), default=0.0),
            "pods": self.progress,
        }
