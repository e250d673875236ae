"""The demo backend: a bridge service (``proto/wsfleet/api/bridge.proto``) that echoes.

Every client message comes back to the same session unchanged, except a few
commands that show (and let tests drive) what backends can do:

| message | the backend sends back |
|---|---|
| ``/whoami`` | its ``--name`` |
| ``/flood N SIZE`` | N messages of SIZE bytes, as fast as it can |
| ``/presence N`` | N droppable messages (``presence:<n>``) |
| ``/typing N`` | N messages with the coalesce key ``typing`` (``typing:<n>``) |
| ``/close CODE REASON`` | ends the session: the gateway closes the client with CODE |
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog

from wsfleet.api import bridge_pb2 as pb
from wsfleet.errors import StartupError
from wsfleet.readiness import write_ready
from wsfleet.settings import BackendSettings

log = structlog.get_logger()

SERVICE = "wsfleet.bridge.v1.Bridge"
MAX_FLOOD = 1_000_000


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
            count, size = min(int(words[1]), MAX_FLOOD), int(words[2])
            return [_message(session_id, b"f" * size) for _ in range(count)]
        if command == "/presence":
            count = min(int(words[1]), MAX_FLOOD)
            return [
                _message(session_id, f"presence:{n}".encode(), droppable=True) for n in range(count)
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


class EchoBackend:
    """Echo each message; keep each gateway's open sessions."""

    def __init__(self, name: str = "backend") -> None:
        self.name = name
        self.sessions: dict[str, pb.SessionInfo] = {}

    async def connect(
        self, events: AsyncIterator[pb.GatewayEvent], context: Any
    ) -> AsyncIterator[pb.BackendEvent]:
        pod = dict(context.invocation_metadata() or ()).get("x-wsfleet-pod", "?")
        log.info("gateway_connected", pod_id=pod)
        mine: set[str] = set()
        try:
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "opened":
                    self.sessions[event.opened.session.session_id] = event.opened.session
                    mine.add(event.opened.session.session_id)
                elif kind == "message":
                    message = event.message
                    for reply in replies(
                        self.name, message.session_id, message.data, message.binary
                    ):
                        yield reply
                elif kind == "closed":
                    self.sessions.pop(event.closed.session_id, None)
                    mine.discard(event.closed.session_id)
        finally:
            for session_id in mine:
                self.sessions.pop(session_id, None)
            log.info("gateway_disconnected", pod_id=pod)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.connect,
                    request_deserializer=pb.GatewayEvent.FromString,
                    response_serializer=pb.BackendEvent.SerializeToString,
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server, port = await start_backend(settings)
    write_ready(settings.ready_file, port=port)
    log.info("backend_started", port=port, name=settings.name)
    await stop.wait()
    await server.stop(grace=1.0)
    log.info("backend_stopped")
