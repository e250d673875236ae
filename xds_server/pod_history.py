"""Pods that left the registry lately, so that operators still see them (as ``gone``).

The registry only holds live pods; a pod that stopped, crashed or expired simply
disappears from it. The control plane follows membership anyway, so it remembers
what it last knew of each pod that went away: at most ``keep`` of them, each for at
most ``keep_s`` seconds, on the wall clock its caller gives (``time.time`` in the control
plane, a fake one in tests: the record's ``gone_at`` is shown to operators as a time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xds_server.membership import Endpoint, Membership

KEEP_PODS = 100
KEEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class GonePod:
    pool: str
    endpoint: Endpoint
    gone_at: float  # wall clock


class PodHistory:
    """Feed it every membership; it reports the pods that left since."""

    def __init__(
        self,
        clock: Callable[[], float],
        keep: int = KEEP_PODS,
        keep_s: float = KEEP_S,
    ) -> None:
        self._keep = keep
        self._keep_s = keep_s
        self._clock = clock
        self._present: dict[str, tuple[str, Endpoint]] = {}
        self._gone: dict[str, GonePod] = {}

    def observe(self, membership: Membership) -> None:
        now = self._clock()
        present = {
            endpoint.pod_id: (pool, endpoint)
            for pool, endpoints in membership.items()
            for endpoint in endpoints
        }
        for pod_id, (pool, endpoint) in self._present.items():
            if pod_id not in present:
                self._gone[pod_id] = GonePod(pool, endpoint, now)
        for pod_id in present:
            self._gone.pop(pod_id, None)  # back (a restart under the same id)
        self._present = present
        self._prune(now)

    def gone(self) -> list[GonePod]:
        """Pods that left, most recent first."""
        self._prune(self._clock())
        return sorted(self._gone.values(), key=lambda pod: pod.gone_at, reverse=True)

    def _prune(self, now: float) -> None:
        for pod_id in [p for p, pod in self._gone.items() if now - pod.gone_at > self._keep_s]:
            del self._gone[pod_id]
        while len(self._gone) > self._keep:
            oldest = min(self._gone.values(), key=lambda pod: pod.gone_at)
            del self._gone[oldest.endpoint.pod_id]
