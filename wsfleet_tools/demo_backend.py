"""The demo backend: a bridge service (``proto/wsfleet/api/bridge.proto``) that echoes.

Every client message comes back to the same session unchanged, except a few
commands that show (and let tests drive) what backends can do:

| message | the backend sends back |
|---|---|
| ``/whoami`` | its ``--name`` |
| ``/flood N SIZE`` | N messages of SIZE bytes, as fast as it can |
| ``/presence N [SIZE]`` | N droppable messages (``presence:<n>``, padded to SIZE bytes) |
| ``/typing N`` | N messages with the coalesce key ``typing`` (``typing:<n>``) |
| ``/close CODE REASON`` | ends the session: the gateway closes the client with CODE |
| ``/stream N MS`` | ``stream-1`` ... ``stream-N``, one every MS milliseconds, with ids |
| ``/broadcast TEXT`` | TEXT to every open session on every gateway (fan-out) |

A client cannot make it send without bound: a command's messages are at most 1 MiB
each and 64 MiB in all, and broadcasts at most 10 a second for the whole backend, of at
most 4 KiB (beyond: the sender is told ``broadcast refused: ...``).

Streamed messages carry ``message_id``s; the backend keeps them until the gateway
acknowledges them durable (``Persisted``) and sends the rest again when the session
reopens, resumed, on any pod: this is how a session survives its pod being killed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import structlog

from wsfleet.api import bridge_pb2 as pb
from wsfleet.batch_spacing import BATCH_SPACING_S
from wsfleet.errors import StartupError
from wsfleet.headers import POD_HEADER
from wsfleet.outbox import Outbox, OutboxClosed
from wsfleet.process_shell import signal_events
from wsfleet.readiness import write_ready
from wsfleet.settings import BackendSettings

log = structlog.get_logger()

SERVICE = "wsfleet.bridge.v2.Bridge"
MAX_FLOOD = 1_000_000  # messages one command may ask for ...
MAX_COMMAND_BYTES = 64 << 20  # ... and bytes, in all (a client cannot ask for gigabytes)
MAX_BROADCAST_BYTES = 4096
BROADCASTS_PER_S = 10  # for the whole backend: any user may broadcast, but not flood everyone
MAX_UNACKED = 100_000  # messages a session may have in flight to the gateway
OUTBOX_LIMIT = 1 << 30  # the demo trusts its gateways: it never makes them wait
MAX_BATCH_EVENTS = 512  # events in one BackendBatch, at most ...
MAX_BATCH_BYTES = 1 << 20  # ... and this much data (a larger message goes alone)


def _message(session_id: str, data: bytes, **flags: Any) -> pb.BackendEvent:
    return pb.BackendEvent(message=pb.ServerMessage(session_id=session_id, data=data, **flags))


def replies(name: str, session_id: str, data: bytes, binary: bool) -> list[pb.BackendEvent]:
    """What the demo backend answers to one client message."""
    words = data.decode(errors="replace").split() if not binary else []
    command = words[0] if words and words[0].startswith("/") else None
    try:
        if command == "/whoami":
            return [_message(session_id, name.encode())]
        if command == "/flood":
            count, size = _bounded(int(words[1]), int(words[2]))
            return [_message(session_id, b"f" * size) for _ in range(count)]
        if command == "/presence":
            count, size = _bounded(int(words[1]), int(words[2]) if len(words) > 2 else 0)
            return [
                _message(session_id, f"presence:{n}".encode().ljust(size, b"."), droppable=True)
                for n in range(count)
            ]
        if command == "/typing":
            count = min(int(words[1]), MAX_FLOOD)
            return [
                _message(session_id, f"typing:{n}".encode(), droppable=True, coalesce_key="typing")
                for n in range(count)
            ]
        if command == "/close":
            code = int(words[1])
            reason = " ".join(words[2:])
            return [
                pb.BackendEvent(
                    close=pb.CloseSession(session_id=session_id, code=code, reason=reason)
                )
            ]
    except (IndexError, ValueError):
        return [_message(session_id, f"bad command: {data.decode(errors='replace')}".encode())]
    return [_message(session_id, data, binary=binary)]


def _bounded(count: int, size: int) -> tuple[int, int]:
    """A command's message count and size, within the caps (ValueError when negative)."""
    if count < 0 or size < 0:
        raise ValueError("negative")
    size = min(size, MAX_BATCH_BYTES)
    return min(count, MAX_FLOOD, MAX_COMMAND_BYTES // max(size, 1)), size


def _outbox() -> Outbox[pb.BackendEvent]:
    return Outbox(OUTBOX_LIMIT, MAX_BATCH_EVENTS, MAX_BATCH_BYTES, BATCH_SPACING_S)


@dataclass
class _Session:
    """What the backend keeps of a session between pods: where it is, what is unacked."""

    pod: str = ""
    out: Outbox[pb.BackendEvent] | None = None
    next_id: int = 1
    unacked: dict[int, bytes] = field(default_factory=dict)
    stream: asyncio.Task[None] | None = None

    def send(self, session_id: str, data: bytes) -> None:
        """Send with a message id; kept until the gateway says it is durable."""
        message_id = self.next_id
        self.next_id += 1
        self.unacked[message_id] = data
        while len(self.unacked) > MAX_UNACKED:
            del self.unacked[next(iter(self.unacked))]
        if self.out is not None:
            self.out.put(_message(session_id, data, message_id=message_id), len(data))


class EchoBackend:
    """Echo each message; stream on request; re-send unacknowledged messages on resume."""

    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.sessions: dict[str, _Session] = {}
        self._broadcasts: collections.deque[float] = collections.deque()  # in the last second

    async def connect(
        self, batches: AsyncIterator[pb.GatewayBatch], context: Any
    ) -> AsyncIterator[pb.BackendBatch]:
        """One gateway's stream: read its batches, answer with one batch per write."""
        pod = dict(context.invocation_metadata() or ()).get(POD_HEADER, "?")
        log.info("gateway_connected", pod_id=pod)
        out = _outbox()
        reader = asyncio.create_task(self._read(batches, out, pod))
        try:
            while True:
                try:
                    events = await out.take()
                except OutboxClosed:
                    return
                yield pb.BackendBatch(events=events)
        finally:
            reader.cancel()
            for state in self.sessions.values():
                if state.out is out:
                    state.out = None  # unacked messages wait for the session to reopen
            log.info("gateway_disconnected", pod_id=pod)

    async def _read(
        self, batches: AsyncIterator[pb.GatewayBatch], out: Outbox[pb.BackendEvent], pod: str
    ) -> None:
        try:
            async for batch in batches:
                for event in batch.events:
                    self._handle(event, out, pod)
        finally:
            out.close()

    def _handle(self, event: pb.GatewayEvent, out: Outbox[pb.BackendEvent], pod: str) -> None:
        kind = event.WhichOneof("event")
        if kind == "opened":
            self._opened(event.opened, out, pod)
        elif kind == "message":
            message = event.message
            if message.data.startswith(b"/"):
                state = self.sessions.get(message.session_id)
                words = message.data.decode(errors="replace").split()
                if state is not None and words[:1] == ["/stream"]:
                    self._start_stream(message.session_id, state, words)
                    return
                if words[:1] == ["/broadcast"]:
                    self._broadcast(message.session_id, message.data.partition(b" ")[2])
                    return
                for reply in replies(self.name, message.session_id, message.data, message.binary):
                    out.put(reply, reply.message.ByteSize() if reply.HasField("message") else 0)
                return
            out.put(
                _message(message.session_id, message.data, binary=message.binary), len(message.data)
            )
        elif kind == "persisted":
            state = self.sessions.get(event.persisted.session_id)
            if state is not None:
                acked = event.persisted.message_id
                for message_id in [m for m in state.unacked if m <= acked]:
                    del state.unacked[message_id]
        elif kind == "closed":
            state = self.sessions.get(event.closed.session_id)
            if state is not None and state.out is out:
                state.out = None
                if state.stream is None or state.stream.done():
                    del self.sessions[event.closed.session_id]

    def _opened(self, opened: pb.SessionOpened, out: Outbox[pb.BackendEvent], pod: str) -> None:
        session_id = opened.session.session_id
        state = self.sessions.setdefault(session_id, _Session())
        state.out, state.pod = out, pod
        if opened.resumed:  # what the gateway had not made durable comes again, in order
            for message_id, data in state.unacked.items():
                if message_id > opened.last_message_id:
                    out.put(_message(session_id, data, message_id=message_id), len(data))

    def _broadcast(self, sender: str, data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        recent = self._broadcasts
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= BROADCASTS_PER_S or len(data) > MAX_BROADCAST_BYTES:
            state = self.sessions.get(sender)
            if state is not None and state.out is not None:
                refusal = (
                    f"broadcast refused: at most {BROADCASTS_PER_S}/s of {MAX_BROADCAST_BYTES} B"
                )
                state.out.put(_message(sender, refusal.encode()))
            return
        recent.append(now)
        for session_id, state in self.sessions.items():
            if state.out is not None:
                state.out.put(_message(session_id, data), len(data))

    def _start_stream(self, session_id: str, state: _Session, words: list[str]) -> None:
        try:
            count, interval_ms = min(int(words[1]), MAX_FLOOD), float(words[2])
        except (IndexError, ValueError):
            if state.out is not None:
                state.out.put(_message(session_id, b"bad command: /stream N INTERVAL_MS"))
            return

        async def stream() -> None:
            for n in range(1, count + 1):
                state.send(session_id, f"stream-{n}".encode())
                await asyncio.sleep(interval_ms / 1000)

        if state.stream is None or state.stream.done():
            state.stream = asyncio.create_task(stream())

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.connect,
                    request_deserializer=pb.GatewayBatch.FromString,
                    response_serializer=pb.BackendBatch.SerializeToString,
                )
            },
        )


async def start_backend(settings: BackendSettings) -> tuple[grpc.aio.Server, int]:
    """Start serving; returns the server and the port it listens on."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([EchoBackend(settings.name).handler()])
    try:
        port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    except RuntimeError:
        port = 0
    if port == 0:
        raise StartupError(f"cannot listen on {settings.host}:{settings.port} (port in use?)")
    await server.start()
    return server, port


async def run(settings: BackendSettings) -> None:
    stop, _ = signal_events()
    server, port = await start_backend(settings)
    write_ready(settings.ready_file, port=port)
    log.info("backend_started", port=port, name=settings.name)
    await stop.wait()
    await server.stop(grace=1.0)
    log.info("backend_stopped")
