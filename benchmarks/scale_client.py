"""One client process of ``scale``: holds its share of the connections with picows (a
WebSocket client written in Cython) on uvloop, and sends its share of the traffic. No task
and no queue per connection: a held connection is a picows transport and its listener, so
that the clients, which share the machine with the fleet, take as little of it as they can
(the aiohttp generator of ``load``, benchmarks/loadgen.py, keeps a reader task per
connection and one task per echo it waits for). JSON lines on stdout, commands on stdin,
as loadgen.py speaks them:

- ``{"event": "progress", "open": n}`` every 0.5 s while connecting;
- ``{"event": "connected", "opened", "errors": {kind: n}, "seconds", "cpu_s",
  "handshake_s": [...]}`` once ``--count`` handshakes, started at ``--rate``/s with at most
  ``--concurrency`` in flight, have ended;
- on ``{"cmd": "keepalive", "rate": m, "seconds": s, "ping_per_second": p, "size": b}``:
  for ``s`` seconds, ``m`` echo messages/s spread round-robin over the held connections
  while WebSocket pings (client ping frame, the server's pong) go to one connection after
  another at ``p``/s; then answers are awaited for at most :data:`ANSWER_TIMEOUT_S`:
  ``{"event": "keepalive", "ping_rtt_s", "pings_lost", "echo_rtt_s", "echo_sent",
  "echo_received", "send_errors", "seconds", "open"}`` (an answer later than
  :data:`ANSWER_TIMEOUT_S` is lost);
- exits on ``{"cmd": "close"}``, when stdin closes, or after ``--idle-s`` with no command.

Every loop is bounded by a count and a deadline; every handshake by ``--handshake-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import time
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSHandshakeError

from benchmarks.paced_opening import add_arguments, open_paced
from benchmarks.worker_pipe import commands, say
from wsfleet.tokens import mint_token, read_auth_key

ANSWER_TIMEOUT_S = 5.0  # a pong or an echo later than this is counted lost
V1 = "wsfleet.v1"
V1_MESSAGE = b'"type":"message"'  # an echo, not a welcome or a heartbeat


class Held(WSListener):  # type: ignore[misc]  # picows ships no stubs for subclassing
    """One held connection: when its unanswered echoes and pings left (answers come back
    in order on a connection), and the round trips measured."""

    __slots__ = ("closed", "cseq", "echoes", "pings", "side", "transport", "v1")

    def __init__(self, v1: bool, side: Fleetside) -> None:
        super().__init__()
        self.v1 = v1
        self.side = side
        self.cseq = 0
        self.echoes: collections.deque[float] = collections.deque()
        self.pings: collections.deque[float] = collections.deque()
        self.transport: WSTransport | None = None
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # picows answers the gateway's pings itself
        if frame.msg_type is WSMsgType.PONG:
            if self.pings:
                self.side.answered(self.side.ping_rtts, self.pings.popleft())
        elif frame.msg_type is WSMsgType.TEXT and self.echoes:
            if self.v1 and V1_MESSAGE not in frame.get_payload_as_bytes():
                return  # the welcome
            self.side.answered(self.side.echo_rtts, self.echoes.popleft())

    def send(self, payload: bytes) -> None:
        """A message: bare, or in protocol v1 a numbered envelope (as the SDKs send)."""
        assert self.transport is not None
        if self.v1:
            self.cseq += 1
            payload = b'{"type":"message","cseq":%d,"data":"%s"}' % (self.cseq, payload)
        self.echoes.append(time.perf_counter())
        self.side.sent()
        self.transport.send(WSMsgType.TEXT, payload)

    def ping(self) -> None:
        assert self.transport is not None
        self.pings.append(time.perf_counter())
        self.side.sent()
        self.transport.send_ping()


class Fleetside:
    """The connections this process holds, the round trips their listeners record, and
    how many answers are still due (``settled`` is set when none is)."""

    def __init__(self) -> None:
        self.held: list[Held] = []
        self.echo_rtts: list[float] = []
        self.ping_rtts: list[float] = []
        self.outstanding = 0
        self.settled = asyncio.Event()

    def listener(self, v1: bool) -> Held:
        return Held(v1, self)

    def sent(self) -> None:
        if self.outstanding <= 0:
            self.settled.clear()  # (set when the answers caught up with the sends before)
        self.outstanding += 1

    def answered(self, rtts: list[float], sent: float) -> None:
        rtts.append(time.perf_counter() - sent)
        self.outstanding -= 1
        if self.outstanding <= 0:
            self.settled.set()

    def reset(self) -> None:
        """Forget what is outstanding from before a measurement."""
        for item in self.held:
            item.echoes.clear()
            item.pings.clear()
        self.echo_rtts.clear()
        self.ping_rtts.clear()
        self.outstanding = 0
        self.settled.clear()


async def connect_all(args: argparse.Namespace, side: Fleetside) -> None:
    key = read_auth_key(args.key_file) if args.key_file else None
    extra = {"Sec-WebSocket-Protocol": V1} if args.v1 else {}

    async def connect(user: str) -> None:
        token = {"Authorization": f"Bearer {mint_token(key, user)}"} if key else {}
        _, held = await ws_connect(
            lambda: side.listener(args.v1),
            f"{args.url}?user={user}",
            extra_headers={**token, **extra},
            websocket_handshake_timeout=args.handshake_timeout,
            local_addr=(args.source_ip, 0) if args.source_ip else None,
        )
        side.held.append(held)

    await open_paced(args, connect, _error_kind, side.held)


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, WSHandshakeError):
        status = exc.response.status if exc.response else None
        return f"HTTP {int(status)}" if status else type(exc).__name__
    return type(exc).__name__


async def keepalive(side: Fleetside, command: dict[str, Any]) -> None:
    """Echo messages spread over the held connections while pings measure the RTT."""
    rate = float(command.get("rate", 0))
    seconds = float(command.get("seconds", 5))
    ping_rate = float(command.get("ping_per_second", 100))
    payload = b"k" * int(command.get("size", 64))
    held = [item for item in side.held if not item.closed]
    side.reset()
    sent = {"echo": 0, "ping": 0, "send_errors": 0}
    started = time.perf_counter()
    end = started + seconds

    async def paced(per_second: float, kind: str) -> None:
        if per_second <= 0 or not held:
            return
        n = 0
        while (at := started + n / per_second) < end:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            item = held[n % len(held)]
            n += 1
            if item.closed:
                sent["send_errors"] += 1
                continue
            if kind == "echo":
                item.send(payload)
            else:
                item.ping()
            sent[kind] += 1

    await asyncio.gather(paced(rate, "echo"), paced(ping_rate, "ping"))
    seconds_sent = time.perf_counter() - started
    if side.outstanding > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(side.settled.wait(), ANSWER_TIMEOUT_S)
    echo_rtts = [rtt for rtt in side.echo_rtts if rtt <= ANSWER_TIMEOUT_S]
    ping_rtts = [rtt for rtt in side.ping_rtts if rtt <= ANSWER_TIMEOUT_S]
    say(
        event="keepalive",
        ping_rtt_s=ping_rtts,
        pings_lost=sent["ping"] - len(ping_rtts),
        echo_rtt_s=echo_rtts,
        echo_sent=sent["echo"],
        echo_received=len(echo_rtts),
        send_errors=sent["send_errors"],
        seconds=seconds_sent,
        open=sum(not item.closed for item in side.held),
    )


async def run(args: argparse.Namespace) -> None:
    side = Fleetside()
    await connect_all(args, side)

    async def handle(command: dict[str, Any]) -> None:
        if command["cmd"] == "keepalive":
            await keepalive(side, command)

    await commands(args.idle_s, handle, "scale client")
    for item in side.held:
        if item.transport is not None and not item.closed:
            with contextlib.suppress(Exception):  # the fleet may be gone already
                item.transport.send_close(WSCloseCode.OK)
                item.transport.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, prefix="scale")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
