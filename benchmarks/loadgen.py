"""One load-generator process: opens WebSockets at a set rate from a source address,
holds them, and measures on command. Several run side by side (``ulimit -n`` is per
process). JSON lines on stdout:

- ``{"event": "progress", "open": n}`` every 0.5 s while connecting;
- ``{"event": "connected", "opened", "errors": {kind: n}, "handshake_s": [...]}``;
- on ``{"cmd": "rtt", "mode": "ping"|"echo", "per_second": r}``:
  ``{"event": "rtt", "rtt_s": [...], "lost": n}``;
- on ``{"cmd": "throughput", "messages": m, "size": s}``:
  ``{"event": "throughput", "sent", "received", "seconds"}``;
- on ``{"cmd": "fanout_reset"}``: ``{"event": "fanout_ready"}``; then on
  ``{"cmd": "fanout", "messages": k, "send": bool}`` (one process sends k ``/broadcast``):
  ``{"event": "fanout", "received", "last"}`` (``last``: perf_counter of the last arrival,
  comparable across processes: CLOCK_MONOTONIC);
- on ``{"cmd": "keepalive", "rate": m, "seconds": s, "ping_per_second": p, "size": b}``:
  for ``s`` seconds, ``m`` echo messages/s spread round-robin over the held connections
  (background load) while WebSocket pings (client ping frame -> server's pong frame) go to
  one connection after another at ``p``/s:
  ``{"event": "keepalive", "ping_rtt_s": [...], "pings_lost", "echo_rtt_s": [...],
  "echo_sent", "echo_received", "seconds", "open"}``;
- exits on ``{"cmd": "close"}``, when stdin closes, or when no command came for
  ``--idle-s`` seconds.

Every loop is bounded by a count and a deadline; every handshake by ``--handshake-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import aiohttp
import uvloop

from benchmarks.paced_opening import add_arguments, open_paced
from benchmarks.worker_pipe import commands, say
from wsfleet.tokens import mint_token, read_auth_key

ANSWER_TIMEOUT_S = 5.0  # a pong or an echo later than this is counted lost


V1 = "wsfleet.v1"


class Held:
    __slots__ = ("cseq", "echoes", "pongs", "v1", "ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, v1: bool) -> None:
        self.ws = ws
        self.v1 = v1
        self.cseq = 0
        self.pongs: asyncio.Queue[float] = asyncio.Queue()
        self.echoes: asyncio.Queue[float] = asyncio.Queue()

    async def send(self, text: str) -> None:
        """A message: bare, or in protocol v1 a numbered envelope (as the SDKs send)."""
        if self.v1:
            self.cseq += 1
            text = json.dumps({"type": "message", "cseq": self.cseq, "data": text})
        await self.ws.send_str(text)

    async def read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.PING:
                await self.ws.pong(message.data)
            elif message.type is aiohttp.WSMsgType.PONG:
                self.pongs.put_nowait(time.perf_counter())
            elif message.type is aiohttp.WSMsgType.TEXT and (
                not self.v1 or '"type":"message"' in message.data  # not a welcome or pong
            ):
                self.echoes.put_nowait(time.perf_counter())


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"HTTP {exc.status}"
    if isinstance(exc, TimeoutError):
        return "handshake timeout"
    return type(exc).__name__


async def run(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file) if args.key_file else None
    connector = aiohttp.TCPConnector(
        limit=0, force_close=True, local_addr=(args.source_ip, 0) if args.source_ip else None
    )
    session = aiohttp.ClientSession(connector=connector)
    held: list[Held] = []
    readers: list[asyncio.Task[None]] = []

    async def connect(user: str) -> None:
        headers = {"Authorization": f"Bearer {mint_token(key, user)}"} if key else {}
        ws = await asyncio.wait_for(
            session.ws_connect(
                f"{args.url}?user={user}",
                headers=headers,
                autoping=False,
                protocols=(V1,) if args.v1 else (),
                timeout=aiohttp.ClientWSTimeout(ws_close=1),
            ),
            args.handshake_timeout,
        )
        item = Held(ws, ws.protocol == V1)
        held.append(item)
        readers.append(asyncio.create_task(item.read()))

    await open_paced(args, connect, _error_kind, held)

    async def handle(command: dict[str, Any]) -> None:
        if command["cmd"] == "rtt":
            await _rtt(held, command)
        elif command["cmd"] == "throughput":
            await _throughput(held, command)
        elif command["cmd"] == "fanout_reset":
            for item in held:
                _forget(item.echoes)
            say(event="fanout_ready")
        elif command["cmd"] == "fanout":
            await _fanout(held, command)
        elif command["cmd"] == "keepalive":
            await _keepalive(held, command)

    await commands(args.idle_s, handle, "loadgen")
    for task in readers:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(session.close(), 10.0)


def _forget(arrivals: asyncio.Queue[float]) -> None:
    """Drop arrivals from before a measurement starts."""
    while not arrivals.empty():
        arrivals.get_nowait()


async def _probe(item: Held, echo: bool) -> float:
    """One round trip: an echo message, or a WebSocket ping frame and its pong."""
    queue = item.echoes if echo else item.pongs
    _forget(queue)
    sent = time.perf_counter()
    await (item.send("rtt") if echo else item.ws.ping())
    return await asyncio.wait_for(queue.get(), ANSWER_TIMEOUT_S) - sent


async def _rtt(held: list[Held], command: dict[str, Any]) -> None:
    rtts: list[float] = []
    lost = 0
    pause = 1.0 / float(command.get("per_second", 2000))
    echo = command.get("mode") == "echo"
    deadline = time.monotonic() + float(command.get("max_seconds", 120))
    for item in held[: int(command.get("sample", len(held)))]:
        if time.monotonic() > deadline:
            break
        try:
            rtts.append(await _probe(item, echo))
        except (TimeoutError, ConnectionError, RuntimeError):
            lost += 1
        await asyncio.sleep(pause)
    say(event="rtt", rtt_s=rtts, lost=lost, open=sum(not item.ws.closed for item in held))


async def _throughput(held: list[Held], command: dict[str, Any]) -> None:
    count = int(command.get("messages", 10))
    payload = "x" * int(command.get("size", 64))
    deadline = time.monotonic() + float(command.get("max_seconds", 30))
    for item in held:
        _forget(item.echoes)
    started = time.perf_counter()

    async def one(item: Held) -> int:
        got = 0
        try:
            for _ in range(count):
                await asyncio.wait_for(item.send(payload), max(0.01, deadline - time.monotonic()))
        except (TimeoutError, ConnectionError, RuntimeError):
            return 0
        while got < count and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(item.echoes.get(), max(0.01, deadline - time.monotonic()))
                got += 1
            except TimeoutError:
                break
        return got

    received = sum(await asyncio.gather(*(one(item) for item in held)))
    say(
        event="throughput",
        sent=count * len(held),
        received=received,
        seconds=time.perf_counter() - started,
    )


async def _fanout(held: list[Held], command: dict[str, Any]) -> None:
    """The sender (one process) broadcasts; every connection counts what arrives."""
    count = int(command.get("messages", 5))
    deadline = time.monotonic() + float(command.get("deadline_s", 60))
    if command.get("send") and held:
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            for n in range(count):
                await asyncio.wait_for(
                    held[0].send(f"/broadcast fanout-{n}"), max(0.01, deadline - time.monotonic())
                )

    async def arrivals(item: Held) -> list[float]:
        got: list[float] = []
        while len(got) < count:
            try:
                remaining = max(0.01, deadline - time.monotonic())
                got.append(await asyncio.wait_for(item.echoes.get(), remaining))
            except TimeoutError:
                break
        return got

    times = await asyncio.gather(*(arrivals(item) for item in held))
    last = max((max(t) for t in times if t), default=0.0)
    say(event="fanout", received=sum(len(t) for t in times), last=last)


async def _keepalive(held: list[Held], command: dict[str, Any]) -> None:
    """Background echo spread over the held connections while pings measure the RTT."""
    rate = float(command.get("rate", 0))
    seconds = float(command.get("seconds", 5))
    ping_rate = float(command.get("ping_per_second", 100))
    payload = "k" * int(command.get("size", 64))
    for item in held:
        _forget(item.echoes)
        _forget(item.pongs)
    echo_rtts: list[float] = []
    ping_rtts: list[float] = []
    counts = {"echo_sent": 0, "pings_lost": 0, "send_errors": 0}
    waiting: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    end = started + seconds

    async def echo_back(item: Held, sent: float) -> None:
        # echoes come back in order on a connection; waiters are served in order too
        with contextlib.suppress(TimeoutError):
            echo_rtts.append(await asyncio.wait_for(item.echoes.get(), ANSWER_TIMEOUT_S) - sent)

    async def background() -> None:
        if rate <= 0 or not held:
            return
        n = 0
        while (at := started + n / rate) < end:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            item = held[n % len(held)]
            n += 1
            sent = time.perf_counter()
            try:
                await asyncio.wait_for(item.send(payload), ANSWER_TIMEOUT_S)
            except (TimeoutError, ConnectionError, RuntimeError):
                counts["send_errors"] += 1
                continue
            counts["echo_sent"] += 1
            waiting.append(asyncio.create_task(echo_back(item, sent)))

    async def pings() -> None:
        if ping_rate <= 0 or not held:
            return
        n = 0
        while (at := started + n / ping_rate) < end:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            item = held[n % len(held)]
            n += 1
            try:
                ping_rtts.append(await _probe(item, echo=False))
            except (TimeoutError, ConnectionError, RuntimeError):
                counts["pings_lost"] += 1

    await asyncio.gather(background(), pings())
    await asyncio.gather(*waiting)
    say(
        event="keepalive",
        ping_rtt_s=ping_rtts,
        echo_rtt_s=echo_rtts,
        echo_received=len(echo_rtts),
        seconds=time.perf_counter() - started,
        open=sum(not item.ws.closed for item in held),
        **counts,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, prefix="load")
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
