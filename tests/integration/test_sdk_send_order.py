"""The Python SDK's SSE and polling links post messages one at a time, in call order.

Each message is its own HTTP POST; sent concurrently they could arrive out of order, and
the gateway drops a client seq it has already passed (the JavaScript SDK had exactly this
flake). A real loopback server that answers odd seqs slowly would reorder them."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from wsfleet_client.transports import _HttpLink  # what SSE and polling links share

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("path", ["/sse", "/poll"])
async def test_concurrent_sends_arrive_one_at_a_time_in_order(path: str) -> None:
    arrived: list[int] = []
    in_flight = 0
    most = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        frame = json.loads(await request.text())
        await asyncio.sleep(0.05 if frame["cseq"] % 2 else 0.0)
        arrived.append(frame["cseq"])
        in_flight -= 1
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/sse/send", receive)
    app.router.add_post("/poll/send", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/ws"
    try:
        async with aiohttp.ClientSession() as session:
            link = _HttpLink(session, base, path, {"user": "u"}, "token")
            frames = [{"type": "message", "cseq": n, "data": str(n)} for n in range(1, 7)]
            await asyncio.gather(*(link.send(frame) for frame in frames))
    finally:
        await runner.cleanup()
    assert arrived == [1, 2, 3, 4, 5, 6]
    assert most == 1
