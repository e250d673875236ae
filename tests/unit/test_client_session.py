"""A client session with fakes for the socket and the backend. Opening it (welcome +
replay): it is in the connection table before any write that can wait, and whatever
happens to the client meanwhile, its registry record and backend session never outlive
it. Its token: checked at every client message, not only by the keep-alive sweep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import cast

from sidecar.admission import Admission
from sidecar.auth import Identity
from sidecar.backend_bridge import BackendLink, SessionSink
from sidecar.channel_service import ChannelService
from sidecar.client_session import SessionStart, open_session
from sidecar.connection_table import ConnectionTable
from sidecar.core import CloseCode, HeartbeatPolicy
from sidecar.core.resume import ResumePlan, Sequencer
from sidecar.core.session import Entry, QueueBounds
from sidecar.gateway import Gateway
from sidecar.metrics import GatewayMetrics
from sidecar.session_registry import SessionRegistry
from wsfleet.registry import ConnectionRecord
from wsfleet.registry.memory import MemoryRegistry
from wsfleet.settings import SidecarSettings

BOUND_S = 10.0  # a guard against a hang, never a measure
REPLAY = 50


class Client:
    """A socket whose client reads the first ``reads`` frames, then stops reading (the
    next write waits) or is gone (``gone``: the next write raises)."""

    takes_wire = False

    def __init__(self, reads: int, gone: bool = False) -> None:
        self.frames: list[int] = []  # seqs written (0: the welcome)
        self.closed: tuple[int, str] | None = None
        self.aborted = False
        self.stuck = asyncio.Event()  # a write waits
        self.ended = asyncio.Event()  # closed or aborted
        self._reads = reads
        self._gone = gone
        self._waiting: asyncio.Future[None] | None = None

    def write(
        self, frame: bytes, binary: bool, seq: int, wire: bytes | None = None
    ) -> Awaitable[None] | None:
        if len(self.frames) < self._reads:
            self.frames.append(seq)
            return None
        if self._gone:
            raise ConnectionResetError("the client is gone")
        self._waiting = asyncio.get_running_loop().create_future()
        self.stuck.set()
        return self._waiting

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self._fail_waiting()
        self.ended.set()

    def abort(self) -> None:
        self.aborted = True
        self._fail_waiting()
        self.ended.set()

    def _fail_waiting(self) -> None:  # what a socket closed under a pending write does
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(ConnectionResetError("closed"))

    def ping(self) -> None:
        pass

    def written_to(self) -> bool:
        return False

    def idle_for(self, now: float) -> float:
        return 0.0


class Backend:
    address = "fake:1"
    is_up = True

    def __init__(self) -> None:
        self.open_sessions: set[str] = set()
        self.received: list[bytes] = []

    def open(self, sink: SessionSink, resumed: bool = False, last_message_id: int = 0) -> None:
        self.open_sessions.add(sink.session_info().session_id)

    def close(self, session_id: str, code: int, reason: str) -> None:
        self.open_sessions.discard(session_id)

    async def send(self, session_id: str, data: bytes, binary: bool, seq: int = 0) -> None:
        self.received.append(data)


class Channels:
    def leave_all(self, session: object) -> None:
        pass


class FakeGateway:
    """What :func:`open_session` and a session use of the gateway."""

    def __init__(self, grace_s: float) -> None:
        self.settings = SidecarSettings(
            redis_url="redis://unused", backends=("fake:1",), slow_consumer_grace_s=grace_s
        )
        self.metrics = GatewayMetrics()
        self.registry = MemoryRegistry()
        self.sessions = SessionRegistry(self.registry, ttl_s=60, flush_s=60, max_per_user=0)
        policy = HeartbeatPolicy(10.0, 20.0, 0.2)
        self.table = ConnectionTable(policy, self.metrics, self.sessions, 60.0)
        self.queue_bounds = QueueBounds(1000, 1 << 20, grace_s)
        self.channels = cast(ChannelService, Channels())
        self.pod_id = self.settings.pod_id

    def new_limits(self) -> None:
        return None

    async def stored(self) -> list[str]:
        await asyncio.sleep(0)  # the registry writer's removal batch
        while self.sessions._writer is not None and not self.sessions._writer.done():
            await self.sessions._writer
        return [r.connection_id for r in await self.registry.connections_of_user("alice")]


async def admitted(gateway: FakeGateway, backend: Backend) -> Admission:
    record = ConnectionRecord("c-1", "alice", "pod", "alice", "websocket", 1.0)
    await gateway.sessions.add(record)
    identity = Identity("alice", {"sub": "alice", "exp": 4_000_000_000})
    return Admission(identity, record, cast(BackendLink, backend), None, {})


def resuming() -> SessionStart:
    entries = [Entry("s-1", seq, b"missed", False) for seq in range(1, REPLAY + 1)]
    return SessionStart(
        "s-1",
        Sequencer(next_seq=REPLAY + 1),
        resumed=True,
        plan=ResumePlan(0, REPLAY, resync=False),
        entries=entries,
    )


async def test_a_client_gone_during_the_replay_leaves_no_record_behind() -> None:
    gateway, backend = FakeGateway(grace_s=5.0), Backend()
    admission = await admitted(gateway, backend)
    assert await gateway.stored() == ["c-1"]
    client = Client(reads=10, gone=True)
    async with asyncio.timeout(BOUND_S):
        session = await open_session(
            cast(Gateway, gateway), admission, client, "websocket", resuming()
        )
    assert client.frames == list(range(10))  # the welcome, then the replay in order
    assert session.close_code == CloseCode.ABNORMAL and client.aborted
    assert gateway.table.connections == {} and gateway.table.by_session == {}
    assert backend.open_sessions == set()
    assert await gateway.stored() == []


async def test_a_resuming_client_that_does_not_read_is_in_the_table_and_is_drained() -> None:
    gateway, backend = FakeGateway(grace_s=BOUND_S * 10), Backend()  # no slow-consumer cut
    admission = await admitted(gateway, backend)
    client = Client(reads=3)
    opening = asyncio.create_task(
        open_session(cast(Gateway, gateway), admission, client, "websocket", resuming())
    )
    async with asyncio.timeout(BOUND_S):
        await client.stuck.wait()
    # heartbeats, token expiry and drain see it while its replay waits
    assert list(gateway.table.connections) == ["c-1"]
    assert gateway.table.heartbeats.next_wakeup() is not None
    await gateway.table.close_all(CloseCode.SERVICE_RESTART, "drain", timeout_s=BOUND_S)
    async with asyncio.timeout(BOUND_S):
        session = await opening
    assert client.closed == (CloseCode.SERVICE_RESTART, "drain")
    assert session.close_code == CloseCode.SERVICE_RESTART
    assert gateway.table.connections == {} and backend.open_sessions == set()
    assert await gateway.stored() == []


async def test_a_replay_the_client_does_not_read_is_cut_after_the_grace() -> None:
    gateway, backend = FakeGateway(grace_s=0.05), Backend()
    admission = await admitted(gateway, backend)
    client = Client(reads=3)
    async with asyncio.timeout(BOUND_S):
        session = await open_session(
            cast(Gateway, gateway), admission, client, "websocket", resuming()
        )
        await client.ended.wait()  # the close runs as a task
    assert client.closed == (CloseCode.TRY_AGAIN_LATER, "slow consumer")
    assert session.close_code == CloseCode.TRY_AGAIN_LATER
    assert gateway.table.connections == {} and backend.open_sessions == set()
    assert await gateway.stored() == []


async def test_a_message_after_the_token_expired_closes_4401_instead_of_going_on() -> None:
    gateway, backend = FakeGateway(grace_s=5.0), Backend()
    admission = await admitted(gateway, backend)
    client = Client(reads=1000)
    start = SessionStart("s-1", None)  # a raw WebSocket: the rule holds for every session
    session = await open_session(cast(Gateway, gateway), admission, client, "websocket", start)
    assert await session.from_client(b"before", False) is True
    session.core.token_expires_at = time.time() - 0.5  # its exp has passed meanwhile
    assert await session.from_client(b"after", False) is False
    assert backend.received == [b"before"]
    assert client.closed == (CloseCode.TOKEN_EXPIRED, "token expired")
