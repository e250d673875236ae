"""The demo backend (``wsfleet backend``), written with the backend kit (``wsfleet.backend``):
it echoes every client message, except a few commands that show (and let tests drive)
what backends can do:

| message | what the backend does |
|---|---|
| ``/whoami`` | answers its ``--name`` |
| ``/flood N SIZE`` | N messages of SIZE bytes, as fast as it can |
| ``/presence N [SIZE]`` | N droppable messages (``presence:<n>``, padded to SIZE bytes) |
| ``/typing N`` | N messages with the coalesce key ``typing`` (``typing:<n>``) |
| ``/close CODE REASON`` | ends the session: the gateway closes the client with CODE |
| ``/stream N MS`` | ``stream-1`` ... ``stream-N``, one every MS milliseconds, durable |
| ``/broadcast TEXT`` | from a broadcaster: TEXT to every open session on every gateway |
| ``/subscribe CHANNEL``, ``/unsubscribe CHANNEL`` | subscribes the session (server-side) |
| ``/publish CHANNEL TEXT`` | publishes TEXT to CHANNEL through its gateway |

A client cannot make it send without bound: a command's messages are at most 1 MiB
each and 64 MiB in all, and broadcasts and publications at most 10 a second for the whole
backend, of at most 4 KiB (beyond: the sender is told ``refused: ...``). Nor can any
client reach everyone: only the users the backend is started with (``--broadcaster USER``,
repeated; ``*`` for any user, for benchmarks) may ``/broadcast``; by default nobody. Client
publications that the namespace sends for approval are accepted as they are.

Streamed messages are durable: the kit keeps them until the gateway has them in the
session's replay buffer and sends the rest again when the session resumes on any pod;
that is how a session survives its pod being killed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Collection
from dataclasses import dataclass

import structlog

from wsfleet import tracing
from wsfleet.backend import Backend, NoGateway, Session, start
from wsfleet.readiness import write_ready
from wsfleet.settings import BackendSettings
from wsfleet.stop_signals import signal_events

log = structlog.get_logger()

MAX_FLOOD = 1_000_000  # messages one command may ask for ...
MAX_COMMAND_BYTES = 64 << 20  # ... and bytes, in all (a client cannot ask for gigabytes)
MAX_MESSAGE_BYTES = 1 << 20
MAX_BROADCAST_BYTES = 4096
BROADCASTS_PER_S = 10  # for the whole backend: a broadcaster may not flood everyone either
ANY_USER = "*"  # as a broadcaster: every user may broadcast (benchmarks, demos)


@dataclass(frozen=True, slots=True)
class Reply:
    """One message a command answers with (or, ``close``, the end of the session)."""

    data: str | bytes = ""
    droppable: bool = False
    coalesce_key: str = ""
    close: tuple[int, str] | None = None


def replies(name: str, text: str) -> list[Reply]:
    """What the demo answers to a command that needs no state (bounded, see above)."""
    words = text.split()
    command = words[0] if words else ""
    try:
        if command == "/whoami":
            return [Reply(name)]
        if command == "/flood":
            count, size = _bounded(int(words[1]), int(words[2]))
            return [Reply("f" * size) for _ in range(count)]
        if command == "/presence":
            count, size = _bounded(int(words[1]), int(words[2]) if len(words) > 2 else 0)
            return [Reply(f"presence:{n}".ljust(size, "."), droppable=True) for n in range(count)]
        if command == "/typing":
            count = min(int(words[1]), MAX_FLOOD)
            return [
                Reply(f"typing:{n}", droppable=True, coalesce_key="typing") for n in range(count)
            ]
        if command == "/close":
            return [Reply(close=(int(words[1]), " ".join(words[2:])))]
    except (IndexError, ValueError):
        return [Reply(f"bad command: {text}")]
    return [Reply(text)]


def _bounded(count: int, size: int) -> tuple[int, int]:
    """A command's message count and size, within the caps (ValueError when negative)."""
    if count < 0 or size < 0:
        raise ValueError("negative")
    size = min(size, MAX_MESSAGE_BYTES)
    return min(count, MAX_FLOOD, MAX_COMMAND_BYTES // max(size, 1)), size


class DemoBackend(Backend):
    """Echo, and the commands above."""

    def __init__(self, name: str = "backend", broadcasters: Collection[str] = ()) -> None:
        super().__init__()
        self.name = name
        self.broadcasters = frozenset(broadcasters)
        self._sends: collections.deque[float] = collections.deque()  # in the last second

    def on_message(self, session: Session, data: str | bytes) -> None:
        if isinstance(data, bytes) or not data.startswith("/"):
            session.send(data)
            return
        command, _, rest = data.partition(" ")
        if command == "/stream":
            self._stream(session, rest.split())
        elif command == "/broadcast":
            if self._may_broadcast(session) and self._allowed(session, rest):
                for other in self.sessions.values():
                    other.send(rest)
        elif command == "/publish":
            channel, _, text = rest.partition(" ")
            if self._allowed(session, text):
                try:
                    self.publish(channel, text)
                except NoGateway:
                    session.send("refused: no gateway")
        elif command == "/subscribe":
            session.subscribe(rest.strip())
        elif command == "/unsubscribe":
            session.unsubscribe(rest.strip())
        else:
            for reply in replies(self.name, data):
                if reply.close is not None:
                    session.close(*reply.close)
                else:
                    session.send(
                        reply.data, droppable=reply.droppable, coalesce_key=reply.coalesce_key
                    )

    def _may_broadcast(self, sender: Session) -> bool:
        """Whether the sender's user is one of the backend's broadcasters; it is told when not."""
        if ANY_USER in self.broadcasters or sender.user_id in self.broadcasters:
            return True
        sender.send("refused: only the backend's broadcasters (--broadcaster) may /broadcast")
        return False

    def _allowed(self, sender: Session, text: str) -> bool:
        """At most :data:`BROADCASTS_PER_S` broadcasts and publications a second, of at
        most :data:`MAX_BROADCAST_BYTES`, for the whole backend; the sender is told when not."""
        now = asyncio.get_running_loop().time()
        recent = self._sends
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= BROADCASTS_PER_S or len(text.encode()) > MAX_BROADCAST_BYTES:
            sender.send(f"refused: at most {BROADCASTS_PER_S}/s of {MAX_BROADCAST_BYTES} B")
            return False
        recent.append(now)
        return True

    def _stream(self, session: Session, words: list[str]) -> None:
        try:
            count, interval_ms = min(int(words[0]), MAX_FLOOD), float(words[1])
        except (IndexError, ValueError):
            session.send("bad command: /stream N INTERVAL_MS")
            return
        if isinstance(session.state, asyncio.Task) and not session.state.done():
            return  # one stream per session

        async def stream() -> None:
            for n in range(1, count + 1):
                session.send(f"stream-{n}", durable=True)
                await asyncio.sleep(interval_ms / 1000)

        # the task is the session's state: the kit keeps the session for a resume meanwhile
        session.state = asyncio.create_task(stream())
        session.state.add_done_callback(lambda _: setattr(session, "state", None))


async def run(settings: BackendSettings) -> None:
    stop, _ = signal_events()
    tracing.configure("wsfleet-backend", settings.name)  # when OTEL_EXPORTER_OTLP_ENDPOINT is set
    backend = DemoBackend(settings.name, settings.broadcasters)
    server, port = await start(backend, settings.host, settings.port)
    write_ready(settings.ready_file, port=port)
    log.info("backend_started", port=port, name=settings.name)
    await stop.wait()
    await server.stop(grace=1.0)
    log.info("backend_stopped")
