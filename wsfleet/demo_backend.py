"""The demo backend: a bridge service (``proto/wsfleet/api/bridge.proto``) that echoes.

Every client message comes back to the same session unchanged. It also shows
how small a backend can be: read gateway events, write backend events.
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


class EchoBackend:
    """Echo each message; count open sessions per gateway pod."""

    def __init__(self) -> None:
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
                    yield pb.BackendEvent(
                        message=pb.ServerMessage(
                            session_id=event.message.session_id,
                            data=event.message.data,
                            binary=event.message.binary,
                        )
                    )
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
    server.add_generic_rpc_handlers([EchoBackend().handler()])
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
    log.info("backend_started", port=port)
    await stop.wait()
    await server.stop(grace=1.0)
    log.info("backend_stopped")
