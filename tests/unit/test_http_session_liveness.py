"""SSE streams that are open and poll sessions that still poll are marked alive in the
registry at every keep-alive sweep, as a pong marks a WebSocket; a poll session that
stopped polling is cut instead."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.connection_table import ConnectionTable
from sidecar.core import HeartbeatPolicy
from sidecar.metrics import GatewayMetrics
from sidecar.session_registry import SessionRegistry

POLL_TIMEOUT_S = 60.0


@dataclass
class FakeConnection:
    connection_id: str
    transport: str
    idle_s: float = 0.0
    user_id: str = "alice"
    pings: int = 0
    aborted: bool = False

    @property
    def session_id(self) -> str:
        return "session-" + self.connection_id

    def send_ping(self) -> None:
        self.pings += 1

    def written_to(self) -> bool:
        return False

    def queued(self) -> tuple[int, int]:
        return 0, 0

    def idle_for(self, now: float) -> float:
        return self.idle_s

    async def close(self, code: int, reason: str) -> None:
        return None

    def abort(self) -> None:
        self.aborted = True

    def expire_token(self, wall_now: float) -> bool:
        return False


@dataclass
class FakeRegistry:
    touched: dict[str, float] = field(default_factory=dict)

    def touch(self, connection_id: str, now: float) -> None:
        self.touched[connection_id] = now

    def remove(self, connection_id: str) -> None:
        return None


def test_open_streams_and_polling_sessions_are_marked_alive_and_the_silent_poll_is_cut() -> None:
    registry = FakeRegistry()
    sessions: SessionRegistry = registry  # type: ignore[assignment]
    table = ConnectionTable(HeartbeatPolicy(), GatewayMetrics(), sessions, POLL_TIMEOUT_S)
    stream = FakeConnection("sse-1", "sse")
    polling = FakeConnection("poll-1", "poll", idle_s=POLL_TIMEOUT_S - 1)
    silent = FakeConnection("poll-2", "poll", idle_s=POLL_TIMEOUT_S + 1)
    for connection in (stream, polling, silent):
        table.track(connection)
    table.keep_alive(now=100.0, wall_now=1_700_000_000.0)
    assert registry.touched == {"sse-1": 1_700_000_000.0, "poll-1": 1_700_000_000.0}
    assert stream.pings == 1 and silent.aborted and not polling.aborted
