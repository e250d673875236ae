"""A client process that opens and holds WebSockets, and measures on command.

Started by benchmarks with JSON arguments; talks JSON lines on stdin/stdout:
it prints ``{"event": "connected", ...}`` once its connections are open (with
handshake timings), then answers each ``{"cmd": "rtt", ...}`` line with the
ping round-trip times it measured, and exits on ``{"cmd": "close"}``. Every
loop is bounded by a count and a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

from wsfleet.tokens import mint_token, read_auth_key


def say(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _answer_pings(ws: aiohttp.ClientWebSocketResponse, pongs: asyncio.Queue[float]) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.PING:
            await ws.pong(message.data)
        elif message.type is aiohttp.WSMsgType.PONG:
            pongs.put_nowait(time.perf_counter())


async def run(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file) if args.key_file else None
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    session = aiohttp.ClientSession(connector=connector)
    sockets: list[tuple[aiohttp.ClientWebSocketResponse, asyncio.Queue[float]]] = []
    readers: list[asyncio.Task[None]] = []
    handshake_s: list[float] = []
    errors: dict[str, int] = {}
    gate = asyncio.Semaphore(args.concurrency)
    deadline = time.monotonic() + args.deadline_s

    async def open_one(n: int) -> None:
        user = f"{args.prefix}-{n}"
        headers = {"Authorization": f"Bearer {mint_token(key, user)}"} if key else {}
        async with gate:
            if time.monotonic() > deadline:
                errors["deadline"] = errors.get("deadline", 0) + 1
                return
            started = time.perf_counter()
            try:
                ws = await session.ws_connect(
                    f"{args.url}?user={user}",
                    headers=headers,
                    autoping=False,
                    timeout=aiohttp.ClientWSTimeout(ws_close=1),
                )
            except Exception as exc:  # counted by kind, never raised
                kind = type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                return
            handshake_s.append(time.perf_counter() - started)
        pongs: asyncio.Queue[float] = asyncio.Queue()
        sockets.append((ws, pongs))
        readers.append(asyncio.create_task(_answer_pings(ws, pongs)))

    started = time.perf_counter()
    await asyncio.gather(*(open_one(n) for n in range(args.count)))
    say(
        event="connected",
        opened=len(sockets),
        errors=errors,
        seconds=time.perf_counter() - started,
        handshake_s=handshake_s,
    )
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        command = json.loads(line)
        if command["cmd"] == "close":
            break
        if command["cmd"] == "rtt":
            rtts: list[float] = []
            lost = 0
            pause = 1.0 / command.get("per_second", 2000)
            for ws, pongs in sockets[: command.get("sample", len(sockets))]:
                while not pongs.empty():
                    pongs.get_nowait()
                sent = time.perf_counter()
                try:
                    await ws.ping()
                    received = await asyncio.wait_for(pongs.get(), 5.0)
                    rtts.append(received - sent)
                except (TimeoutError, ConnectionError, RuntimeError):
                    lost += 1
                await asyncio.sleep(pause)
            say(event="rtt", rtt_s=rtts, lost=lost, open=sum(not ws.closed for ws, _ in sockets))
    for task in readers:
        task.cancel()
    await session.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--deadline-s", type=float, default=120.0)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
