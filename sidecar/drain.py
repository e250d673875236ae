"""Draining this pod: stop taking sessions, close the ones it has, paced, then leave.

Order (written once, here): the pod turns DRAINING in the registry at once (the
control plane marks it DRAINING in EDS: Envoy sends it no new sessions, but
keeps existing upgraded connections, so the pod must close them itself) and
fails readiness; its clients are closed with 1012 and a retry hint in the
reason, spread evenly over the budget (:class:`~sidecar.core.DrainPlan`),
so the reconnect rate the fleet sees stays flat; at the budget whatever is left
is closed at once. Then the pod stays in the registry as DRAINED (still DRAINING
in EDS) for as long as it runs: Envoy keeps a host that merely left EDS while its
health check passes, and would go on hashing users onto it. A drained pod can be
put back (:meth:`Drainer.cancel`, ``wsfleet undrain``) or stopped; it leaves the
registry when its process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import structlog

from sidecar.connection_table import Connection, ConnectionTable
from sidecar.core import CloseCode, DrainPlan, retry_hint_reason
from sidecar.gateway import Gateway
from wsfleet.cancelling import cancel_and_wait
from wsfleet.pod_registration import PodRegistration
from wsfleet.registry import PodState

log = structlog.get_logger()

TICK_MAX_S = 0.25
CLOSE_WAIT_S = 5.0  # at the end, how long the last closes get to finish
CLOSE_POLL_S = 0.05  # meanwhile, how often the table is looked at


class Drainer:
    """Runs at most one drain of this pod and reports its progress."""

    def __init__(
        self, gateway: Gateway, registration: PodRegistration, retry_hint_ms: int = 250
    ) -> None:
        self._gateway = gateway
        self._registration = registration
        self._retry_hint_ms = retry_hint_ms
        self._plan: DrainPlan | None = None
        self._task: asyncio.Task[None] | None = None
        self._started_wall = 0.0
        self.state = "serving"  # serving | draining | drained
        self.done = asyncio.Event()

    @property
    def retry_hint_ms(self) -> int:
        """The retry hint its closes carry (before jitter)."""
        return self._retry_hint_ms

    def start(self, budget_s: float) -> bool:
        """Begin draining over ``budget_s``; False if a drain already runs or ran."""
        if self._task is not None:
            return False
        self.state = "draining"
        self._gateway.gatekeeper.draining = True
        self._started_wall = time.time()
        self._task = asyncio.create_task(self._run(budget_s))
        return True

    async def cancel(self) -> bool:
        """Stop a drain (a rollback): serve again; already closed clients simply reconnect."""
        if self._task is None:
            return False
        await cancel_and_wait(self._task)
        self._task = None
        self._plan = None
        self.done = asyncio.Event()
        self._gateway.gatekeeper.draining = False
        await self._registration.set_state(PodState.SERVING)
        self.state = "serving"
        log.info("drain_cancelled")
        return True

    def hurry(self) -> None:
        """Close everything now (a second SIGTERM)."""
        if self._plan is not None:
            self._plan.budget_s = 0.0

    async def _run(self, budget_s: float) -> None:
        gateway = self._gateway
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):  # a dead registry must not stall the drain
            await asyncio.wait_for(self._registration.set_state(PodState.DRAINING), 2.0)
        pending = list(gateway.table.connections.values())
        plan = self._plan = DrainPlan(len(pending), budget_s, loop.time())
        log.info("drain_started", connections=len(pending), budget_s=budget_s)
        await close_paced(gateway.table, pending, plan, "drain", self._retry_hint_ms)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._registration.set_state(PodState.DRAINED), 2.0)
        self.state = "drained"
        self._gateway.metrics.drain_seconds.observe(time.time() - self._started_wall)
        log.info("drain_finished", closed=plan.total)
        self.done.set()

    def progress(self) -> dict[str, Any]:
        if self._plan is None:
            return {"state": self.state, "total": 0, "closed": 0, "left": 0, "eta_s": 0.0}
        open_left = len(self._gateway.table.connections)
        progress = self._plan.progress(asyncio.get_running_loop().time())
        return {
            "state": self.state,
            "started_at": self._started_wall,
            "budget_s": self._plan.budget_s,
            "total": progress.total,
            "closed": progress.total - min(progress.total, open_left),
            "left": open_left,
            "eta_s": progress.eta_s,
        }


async def close_paced(
    table: ConnectionTable,
    pending: list[Connection],
    plan: DrainPlan,
    reason: str,
    retry_hint_ms: int,
) -> None:
    """Close ``pending`` at the plan's pace, each with 1012 and a retry hint (jittered
    0.5-1.5x so the clients do not come back in step), the rest at the budget's end; returns
    once all are closed (or gone by themselves) and their closes have had a few seconds.
    Used by a pod's drain and by an Envoy's (:mod:`sidecar.edge_drain`)."""
    loop = asyncio.get_running_loop()
    pending = list(pending)
    random.shuffle(pending)  # no user or age order: every cohort drains evenly
    closing: set[asyncio.Task[None]] = set()
    closed: list[Connection] = []
    while pending:
        still = [c for c in pending if c.connection_id in table.connections]
        plan.closed(len(pending) - len(still))  # clients that left by themselves
        pending = still
        now = loop.time()
        due = plan.due(now)
        for connection in pending[:due]:
            hint = int(retry_hint_ms * random.uniform(0.5, 1.5))
            task = asyncio.create_task(
                connection.close(CloseCode.SERVICE_RESTART, retry_hint_reason(reason, hint))
            )
            closing.add(task)
            task.add_done_callback(closing.discard)
            closed.append(connection)
        plan.closed(min(due, len(pending)))
        pending = pending[due:]
        if pending:
            wake = plan.next_wakeup()
            delay = TICK_MAX_S if wake is None else min(TICK_MAX_S, wake - now)
            await asyncio.sleep(max(0.005, delay))
    await _closes_finished(table, closed, closing, loop.time() + CLOSE_WAIT_S)


async def _closes_finished(
    table: ConnectionTable,
    closed: list[Connection],
    closing: set[asyncio.Task[None]],
    deadline: float,
) -> None:
    """Until the connections closed have left the table (their clients' close frames in,
    or their lingering closes' bounds reached), at most until ``deadline``. A WebSocket's
    close returns once its close frame is written: without this, a drain reported itself
    over (and its last progress counted) while the last clients were still answering."""
    loop = asyncio.get_running_loop()
    if closing:
        await asyncio.wait(set(closing), timeout=max(0.0, deadline - loop.time()))
    while loop.time() < deadline:
        closed = [c for c in closed if c.connection_id in table.connections]
        if not closed:
            return
        await asyncio.sleep(CLOSE_POLL_S)
