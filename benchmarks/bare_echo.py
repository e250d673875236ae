"""The peer for comparison: a bare aiohttp WebSocket echo server, nothing else.

``python -m benchmarks.bare_echo --port P [--ready-file F]``; uvloop, backlog
4096, aiohttp's own ping answering, no auth, no registry, no backend; ``/broadcast TEXT``
fans TEXT out to every connection, as the demo backend does behind wsfleet, and so does
``POST /broadcast`` with TEXT as its body (the peer of the server API's ``publish``).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import uvloop
from aiohttp import WSMsgType, web

from wsfleet.readiness import write_ready

OPEN: set[web.WebSocketResponse] = set()


async def echo(request: web.Request) -> web.WebSocketResponse:
    """Echo; ``/broadcast TEXT`` sends TEXT to every open connection (fan-out)."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    OPEN.add(ws)
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT and message.data.startswith("/broadcast "):
                text = message.data.partition(" ")[2]
                for other in list(OPEN):
                    if not other.closed:
                        await other.send_str(text)
            elif message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
    finally:
        OPEN.discard(ws)
    return ws


async def broadcast(request: web.Request) -> web.Response:
    """``POST /broadcast`` with TEXT as the body: TEXT to every open connection."""
    text = await request.text()
    sent = 0
    for ws in list(OPEN):
        if not ws.closed:
            await ws.send_str(text)
            sent += 1
    return web.json_response({"sent": sent})


async def serve(port: int, ready_file: Path | None) -> None:
    app = web.Application()
    app.router.add_get("/ws", echo)
    app.router.add_post("/broadcast", broadcast)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    write_ready(ready_file, port=runner.addresses[0][1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.ready_file))


if __name__ == "__main__":
    main()
