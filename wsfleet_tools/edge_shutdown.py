"""``wsfleet edge-shutdown-manager``: drain one Envoy before Kubernetes stops it.

Kubernetes stops a pod by sending SIGTERM; Envoy then closes every WebSocket it carries at
once, and each of those clients reconnects in the same second. This process runs in the
Envoy pod, beside Envoy (the pattern of Envoy Gateway's and Contour's shutdown managers),
and turns the stop into a drain: both containers' ``preStop`` hooks call its blocking
``GET /shutdown/ready`` on a loopback port. The first call asks the control plane to drain
this Envoy node (``POST /envoys/drain``: Envoy's own ``/edge/ready`` turns 503, so the
readiness probe and the load balancer stop sending new connections; after ``delist`` the
gateways close this Envoy's WebSockets with 1012, spread over ``budget``), then every call
waits until the drain reports ``drained`` or the budget, the delist time and a margin have
passed, and answers 200. Only then does the kubelet send SIGTERM to both containers. A call
after the answer returns at once.

The decisions (when to ask, when to poll, when to answer) are :class:`ShutdownCore`, pure
and driven by the caller's clock; the aiohttp shell around it is
:mod:`wsfleet_tools.edge_shutdown_manager`, and the command line
:mod:`wsfleet_tools.edge_shutdown_command` (which imports the shell only when it runs).
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from wsfleet.arg_types import non_negative_float, positive_float
from wsfleet.arg_types import port as port_number
from wsfleet.settings_flags import setting

SHUTDOWN_PATH = "/shutdown/ready"
LISTEN_HOST = "127.0.0.1"  # the kubelet calls the hooks inside the pod: never off loopback
DEFAULT_PORT = 19002  # Envoy Gateway's shutdown manager port, for familiarity
DEFAULT_BUDGET_S = 60.0
DEFAULT_DELIST_S = 15.0
DEFAULT_MARGIN_S = 10.0
DEFAULT_POLL_S = 1.0
CALL_TIMEOUT_S = 5.0  # one call to the control plane; the deadline bounds them all


@dataclasses.dataclass(frozen=True)
class EdgeShutdownSettings:
    """The shutdown manager of one Envoy pod (``wsfleet edge-shutdown-manager``)."""

    envoy_node: str = setting(
        flag="--node", help="this Envoy's xDS node id (in Kubernetes: the pod name)", group="drain"
    )
    control_plane: str = setting(
        help="the control plane's admin URL (e.g. http://xds-server:18001)", group="drain"
    )
    admin_token_file: Path = setting(
        help="the control plane's admin token (the file of the wsfleet-keys Secret)",
        group="drain",
        check=Path,
    )
    edge_drain_budget_s: float = setting(
        DEFAULT_BUDGET_S,
        flag="--budget",
        help="seconds the gateways spread this Envoy's 1012 closes over",
        group="drain",
        check=positive_float,
    )
    edge_delist_s: float = setting(
        DEFAULT_DELIST_S,
        flag="--delist",
        help="seconds between /edge/ready turning 503 and the first close (the load "
        "balancer and the Service stop sending new connections meanwhile)",
        group="drain",
        check=non_negative_float,
    )
    edge_drain_margin_s: float = setting(
        DEFAULT_MARGIN_S,
        flag="--margin",
        help="seconds it waits beyond delist + budget before it answers anyway",
        group="drain",
        check=non_negative_float,
    )
    edge_drain_poll_s: float = setting(
        DEFAULT_POLL_S,
        flag="--poll-interval",
        help="seconds between two looks at the drain's state",
        group="drain",
        check=positive_float,
    )
    shutdown_port: int = setting(
        DEFAULT_PORT,
        flag="--port",
        help=f"the loopback port of {SHUTDOWN_PATH} (the preStop hooks' target)",
        group="process",
        check=port_number,
    )


class Asked(enum.Enum):
    """How the control plane answered ``POST /envoys/drain``."""

    ACCEPTED = "accepted"  # 2xx, or 409: a drain of this node is under way
    REFUSED = "refused"  # another 4xx: asking again changes nothing (bad token, bad node)
    FAILED = "failed"  # unreachable or 5xx: ask again until the deadline


class Step(enum.Enum):
    ASK = "ask"
    POLL = "poll"
    ANSWER = "answer"


@dataclasses.dataclass(frozen=True)
class DrainTimes:
    budget_s: float
    delist_s: float
    margin_s: float

    @property
    def longest_s(self) -> float:
        """The longest a shutdown waits: Kubernetes' grace period must exceed it."""
        return self.delist_s + self.budget_s + self.margin_s


class ShutdownCore:
    """One Envoy's shutdown, from the first ``/shutdown/ready`` call: ask for the drain
    until the control plane takes it, then watch it until it is drained; answer when it
    is, when the control plane refused it, or at the deadline (a control plane that is
    down must not keep the pod from stopping)."""

    def __init__(self, times: DrainTimes, started_at: float, poll_interval_s: float) -> None:
        self.deadline = started_at + times.longest_s
        self._poll_interval_s = poll_interval_s
        self._accepted = False
        self.outcome: str | None = None  # drained | refused | deadline, once answered

    def decide(self, now: float) -> Step:
        if self.outcome is None and now >= self.deadline:
            self.outcome = "deadline"
        if self.outcome is not None:
            return Step.ANSWER
        return Step.POLL if self._accepted else Step.ASK

    def asked(self, answer: Asked) -> None:
        if answer is Asked.ACCEPTED:
            self._accepted = True
        elif answer is Asked.REFUSED and self.outcome is None:
            self.outcome = "refused"

    def polled(self, state: str | None) -> None:
        """The drain's state (None: the control plane did not say)."""
        if state == "drained" and self.outcome is None:
            self.outcome = "drained"

    def pause_s(self, now: float) -> float:
        """How long to wait before the next step: a poll interval, never past the deadline."""
        return max(0.0, min(self._poll_interval_s, self.deadline - now))

    def call_timeout_s(self, now: float) -> float:
        return max(0.1, min(CALL_TIMEOUT_S, self.deadline - now))


def asked_from_status(status: int) -> Asked:
    if 200 <= status < 300 or status == 409:
        return Asked.ACCEPTED
    if 400 <= status < 500:
        return Asked.REFUSED
    return Asked.FAILED
