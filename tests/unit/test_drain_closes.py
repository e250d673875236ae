"""A drain is over only once the clients it closed have left the connection table."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from sidecar.connection_table import ConnectionTable
from sidecar.core import CloseCode, DrainPlan
from sidecar.drain import close_paced


class Lingering:
    """A connection whose close is written at once and whose client answers a little
    later: only then does it leave the table (as a WebSocket's does)."""

    def __init__(self, connection_id: str, table: dict[str, Any], answer_s: float) -> None:
        self.connection_id = connection_id
        self.codes: list[int] = []
        self._table = table
        self._answer_s = answer_s

    async def close(self, code: int, reason: str) -> None:
        self.codes.append(code)
        loop = asyncio.get_running_loop()
        loop.call_later(self._answer_s, self._table.pop, self.connection_id, None)


async def test_the_drain_waits_for_its_closed_clients_to_leave_the_table() -> None:
    connections: dict[str, Any] = {}
    table = cast(ConnectionTable, SimpleNamespace(connections=connections))
    clients = [Lingering(f"c{i}", connections, answer_s=0.05 * i) for i in range(6)]
    connections.update({client.connection_id: client for client in clients})
    plan = DrainPlan(total=6, budget_s=0.0, started_at=asyncio.get_running_loop().time())
    await close_paced(table, clients, plan, "drain", 100)  # type: ignore[arg-type]
    assert connections == {}  # the last answered 0.25 s after its close was written
    assert all(client.codes == [CloseCode.SERVICE_RESTART] for client in clients)
