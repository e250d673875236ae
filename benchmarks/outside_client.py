"""The outside client of ``load --client picows``: one process, picows (a WebSocket client
written in Cython) on uvloop, pinned to the client core by its parent. Every target gets the
same requests: connection ``n`` asks ``URL?user=o-n`` with the token of ``o-n`` (minted before
any clock starts), and the ``wsfleet.v1`` subprotocol for the v1 row only. JSON lines on
stdout, commands on stdin:

- at start: ``{"event": "ready"}`` once every token is minted;
- ``{"cmd": "surge"}``: ``--count`` handshakes, ``--in-flight`` at a time; each connection is
  then held. ``{"event": "surge", "opened", "errors": {kind: n}, "seconds", "cpu_s",
  "handshake_s": [...]}``;
- ``{"cmd": "echo", "connections": c, "depth": d, "messages": m, "size": b,
  "max_seconds": s}``: on the first ``c`` held connections, ``d`` messages in flight each
  (a new one leaves as each echo arrives) until ``m`` per connection have been echoed:
  ``{"event": "echo", "sent", "received", "seconds", "cpu_s", "rtt_s": {summary}}``;
- exits on ``{"cmd": "close"}``, when stdin closes, or after ``--idle-s`` with no command.

Every loop is bounded by a count and a deadline; every handshake by ``--handshake-timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any

import uvloop
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
from picows.common import WSHandshakeError

from benchmarks.report import summary
from benchmarks.worker_pipe import commands, say
from wsfleet.arg_types import positive_float, positive_int
from wsfleet.tokens import mint_token, read_auth_key

V1 = "wsfleet.v1"
V1_MESSAGE = b'"type":"message"'  # an echo, not a welcome or a heartbeat


class Echo:
    """One connection's echo pipeline: ``depth`` in flight, ``total`` in all."""

    __slots__ = (
        "cseq",
        "depth",
        "done",
        "payload",
        "received",
        "rtts",
        "sent",
        "total",
        "transport",
        "v1",
    )

    def __init__(
        self, transport: WSTransport, payload: bytes, v1: bool, depth: int, total: int
    ) -> None:
        self.transport, self.payload, self.v1 = transport, payload, v1
        self.depth, self.total = depth, total
        self.cseq = 0
        self.sent: collections.deque[float] = collections.deque()
        self.rtts: list[float] = []
        self.received = 0
        self.done = asyncio.get_running_loop().create_future()

    def start(self) -> None:
        for _ in range(min(self.depth, self.total)):
            self.send_one()

    def send_one(self) -> None:
        message = self.payload
        if self.v1:  # a numbered envelope, as the SDKs send (the sidecar drops repeats)
            self.cseq += 1
            message = b'{"type":"message","cseq":%d,"data":"%s"}' % (self.cseq, message)
        self.sent.append(time.perf_counter())
        self.transport.send(WSMsgType.TEXT, message)

    def echoed(self) -> None:
        if not self.sent:
            return  # not ours (fan-out leftovers)
        self.rtts.append(time.perf_counter() - self.sent.popleft())
        self.received += 1
        if self.received + len(self.sent) < self.total:
            self.send_one()
        elif self.received >= self.total and not self.done.done():
            self.done.set_result(None)


class Client(WSListener):  # type: ignore[misc]  # picows ships no stubs for subclassing
    def __init__(self, v1: bool) -> None:
        super().__init__()
        self.v1 = v1
        self.echo: Echo | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.TEXT or self.echo is None:
            return  # picows answers pings itself
        if self.v1 and V1_MESSAGE not in frame.get_payload_as_bytes():
            return
        self.echo.echoed()


async def surge(args: argparse.Namespace, tokens: list[str]) -> list[tuple[WSTransport, Client]]:
    held: list[tuple[WSTransport, Client]] = []
    handshakes: list[float] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(args.in_flight)
    deadline = time.monotonic() + args.deadline_s
    extra = {"Sec-WebSocket-Protocol": V1} if args.v1 else {}

    async def open_one(n: int) -> None:
        async with gate:
            if time.monotonic() > deadline:
                errors["deadline"] = errors.get("deadline", 0) + 1
                return
            started = time.perf_counter()
            try:
                transport, client = await ws_connect(
                    lambda: Client(args.v1),
                    f"{args.url}?user={args.prefix}-{n}",
                    extra_headers={"Authorization": f"Bearer {tokens[n]}", **extra},
                    websocket_handshake_timeout=args.handshake_timeout,
                    local_addr=(args.source_ip, 0),
                )
            except WSHandshakeError as refused:
                status = refused.response.status if refused.response else None
                kind = f"HTTP {int(status)}" if status else type(refused).__name__
                errors[kind] = errors.get(kind, 0) + 1
                return
            except Exception as exc:  # counted by kind, never raised
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            handshakes.append(time.perf_counter() - started)
            held.append((transport, client))

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(open_one(n) for n in range(args.count)))
    say(
        event="surge",
        opened=len(held),
        errors=errors,
        seconds=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,
        handshake_s=handshakes,
    )
    return held


async def echo(held: list[tuple[WSTransport, Client]], command: dict[str, Any]) -> None:
    size, depth = int(command["size"]), int(command["depth"])
    total = int(command["messages"])
    runs = []
    for transport, client in held[: int(command["connections"])]:
        client.echo = Echo(transport, b"e" * size, client.v1, depth, total)
        runs.append(client.echo)
    started, cpu_started = time.perf_counter(), time.process_time()
    for run in runs:
        run.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(run.done for run in runs)), float(command["max_seconds"])
        )
    seconds = time.perf_counter() - started
    say(
        event="echo",
        sent=sum(run.received + len(run.sent) for run in runs),
        received=sum(run.received for run in runs),
        seconds=seconds,
        cpu_s=time.process_time() - cpu_started,
        rtt_s=summary([t for run in runs for t in run.rtts]),
    )
    for _, client in held:
        client.echo = None


async def run(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file)
    tokens = [mint_token(key, f"{args.prefix}-{n}") for n in range(args.count)]
    say(event="ready")
    held: list[tuple[WSTransport, Client]] = []

    async def handle(command: dict[str, Any]) -> None:
        if command["cmd"] == "surge" and not held:
            held.extend(await surge(args, tokens))
        elif command["cmd"] == "echo":
            await echo(held, command)

    await commands(args.idle_s, handle, "outside client")
    for transport, _ in held:
        transport.send_close(WSCloseCode.OK)
        transport.disconnect()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=positive_int, required=True)
    parser.add_argument("--in-flight", type=positive_int, default=256)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--v1", action="store_true", help="offer the wsfleet.v1 subprotocol")
    parser.add_argument("--source-ip", default="127.0.0.1")
    parser.add_argument("--prefix", default="o")
    parser.add_argument("--handshake-timeout", type=positive_float, default=30.0)
    parser.add_argument("--deadline-s", type=positive_float, default=300.0)
    parser.add_argument("--idle-s", type=positive_float, default=900.0)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
