"""Draining an Envoy from behind it: close the connections that came through that Envoy.

Envoy does not close upgraded WebSockets when drained, so when the control plane drains an
Envoy (``POST /envoys/drain``) it tells every pod, ``POST /edge-drains``, to close the
connections that came through it (recorded from the ``x-wsfleet-edge`` header Envoy sets,
:meth:`ConnectionTable.set_edge`), with 1012 and a retry hint, paced evenly over the budget
as a pod drain is (:func:`sidecar.drain.close_paced`); the pod keeps serving everyone
else. The connections are those open when the order came: the Envoy answers new requests
itself (503) while it drains. An order is known by its ``drain_id``: repeating it (the
control plane does, when asked for progress) changes nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import structlog
from multidict import CIMultiDictProxy

from sidecar.connection_table import ConnectionTable
from sidecar.core import DrainPlan
from sidecar.drain import close_paced
from wsfleet.cancelling import cancel_and_wait

log = structlog.get_logger()

EDGE_HEADER = "x-wsfleet-edge"  # set by each Envoy (the control plane's RDS), never a client
MAX_EDGE_CHARS = 128
MAX_EDGE_DRAINS = 64  # orders remembered (running or done): the oldest done are forgotten
MAX_RUNNING = 16  # Envoys drained at once, per pod


def edge_of(headers: CIMultiDictProxy[str]) -> str:
    """The Envoy a request came through ("" if none, or a value no Envoy of ours sets)."""
    edge = headers.get(EDGE_HEADER, "")
    return edge if len(edge) <= MAX_EDGE_CHARS and edge.isprintable() else ""


def note_edge(table: ConnectionTable, connection_id: str, headers: CIMultiDictProxy[str]) -> None:
    """Record the Envoy a just-opened connection came through."""
    table.set_edge(connection_id, edge_of(headers))


class _EdgeDrain:
    def __init__(self, edge: str, plan: DrainPlan) -> None:
        self.edge = edge
        self.plan = plan
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()


class EdgeDrainer:
    """The Envoy drains of this pod: at most :data:`MAX_RUNNING` at once."""

    def __init__(self, table: ConnectionTable, retry_hint_ms: int = 250) -> None:
        self._table = table
        self._retry_hint_ms = retry_hint_ms
        self._drains: OrderedDict[str, _EdgeDrain] = OrderedDict()  # by drain id

    def start(self, drain_id: str, edge: str, budget_s: float) -> bool:
        """Close ``edge``'s connections over ``budget_s``; False if this order was given
        already. Raises OverflowError when :data:`MAX_RUNNING` drains run."""
        if drain_id in self._drains:
            return False
        if sum(1 for d in self._drains.values() if not d.done) >= MAX_RUNNING:
            raise OverflowError(f"at most {MAX_RUNNING} Envoy drains run at once")
        pending = self._table.of_edge(edge)
        loop = asyncio.get_running_loop()
        drain = _EdgeDrain(edge, DrainPlan(len(pending), budget_s, loop.time()))
        drain.task = asyncio.create_task(
            close_paced(self._table, pending, drain.plan, "edge drain", self._retry_hint_ms)
        )
        self._drains[drain_id] = drain
        while len(self._drains) > MAX_EDGE_DRAINS:
            oldest = next((key for key, d in self._drains.items() if d.done), None)
            if oldest is None:
                break
            del self._drains[oldest]
        log.info("edge_drain_started", edge=edge, connections=len(pending), budget_s=budget_s)
        return True

    def progress(self, edge: str) -> dict[str, Any]:
        """How many connections through ``edge`` are open here, and its latest drain."""
        latest = next((d for d in reversed(self._drains.values()) if d.edge == edge), None)
        view: dict[str, Any] = {"edge": edge, "open": len(self._table.of_edge(edge))}
        if latest is None:
            return {**view, "drain": None}
        now = asyncio.get_running_loop().time()
        progress = latest.plan.progress(now)
        return {
            **view,
            "drain": {
                "state": "drained" if latest.done else "closing",
                "total": progress.total,
                "closed": progress.closed,
                "eta_s": progress.eta_s,
            },
        }

    async def stop(self) -> None:
        await cancel_and_wait(*(drain.task for drain in self._drains.values()))
