"""`wsfleet edge-shutdown-manager`, the process beside Envoy in a Kubernetes pod: its
blocking GET /shutdown/ready (both containers' preStop hooks) asks the control plane to drain
its Envoy node and answers only once the drain reports `drained`; a second call answers at
once; SIGTERM stops it.

The control plane here is a stand-in of the `POST /envoys/drain` / `GET /envoys/drain/{node}`
contract (the real API was not there when this was written): it records what it was asked
and reports `drained` only when the test says so."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import wait_for
from wsfleet_tools.edge_shutdown import SHUTDOWN_PATH
from wsfleet_tools.launcher.ports import free_port

pytestmark = pytest.mark.integration

TOKEN = "edge-shutdown-test-token-0123456789"
NODE = "envoy-zone-a-5d8f9-abcde"
DEADLINE_S = 30.0


class StandInControlPlane:
    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, Any]]] = []
        self.polls = 0
        self.state = "delisting"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/envoys/drain", self._drain)
        app.router.add_get("/envoys/drain/{node}", self._status)
        return app

    async def _drain(self, request: web.Request) -> web.Response:
        self.asked.append((request.headers.get("Authorization", ""), await request.json()))
        return web.json_response({"node": NODE}, status=202)

    async def _status(self, request: web.Request) -> web.Response:
        self.polls += 1
        if request.match_info["node"] != NODE:
            return web.json_response({"error": "no drain of that node"}, status=404)
        return web.json_response({"state": self.state, "remaining": 0})


async def test_shutdown_ready_blocks_until_the_envoy_is_drained(tmp_path: Path) -> None:
    plane = StandInControlPlane()
    runner = web.AppRunner(plane.app())
    await runner.setup()
    plane_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", plane_port).start()
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN)
    port = free_port()
    env = {
        **os.environ,
        "WSFLEET_ENVOY_NODE": NODE,
        "WSFLEET_CONTROL_PLANE": f"http://127.0.0.1:{plane_port}",
        "WSFLEET_ADMIN_TOKEN_FILE": str(token_file),
        "WSFLEET_EDGE_DRAIN_BUDGET_S": "40",
        "WSFLEET_EDGE_DELIST_S": "3",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "wsfleet_tools", "edge-shutdown-manager", "--port", str(port)),
        *("--poll-interval", "0.1"),
        env=env,
    )
    url = f"http://127.0.0.1:{port}{SHUTDOWN_PATH}"
    try:
        async with aiohttp.ClientSession() as session:

            async def listening() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as got:
                        return got.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(listening, DEADLINE_S)
            assert plane.asked == []  # nothing happens before a hook calls

            async def ready() -> tuple[int, Any]:
                async with session.get(url) as got:
                    return got.status, await got.json()

            # both preStop hooks call; one drain is asked for, and neither is answered yet
            envoy_hook = asyncio.create_task(ready())
            manager_hook = asyncio.create_task(ready())

            async def watched() -> bool:
                return plane.polls >= 3

            await wait_for(watched, DEADLINE_S)
            assert not envoy_hook.done() and not manager_hook.done()
            assert plane.asked == [
                (f"Bearer {TOKEN}", {"node": NODE, "budget_s": 40.0, "delist_s": 3.0})
            ]

            plane.state = "drained"
            answers = await asyncio.wait_for(asyncio.gather(envoy_hook, manager_hook), DEADLINE_S)
            assert answers == [(200, {"node": NODE, "outcome": "drained"})] * 2

            polls = plane.polls
            assert await asyncio.wait_for(ready(), 5.0) == (
                200,
                {"node": NODE, "outcome": "drained"},
            )
            assert len(plane.asked) == 1 and plane.polls == polls  # at once, nothing asked again
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), DEADLINE_S)
        await runner.cleanup()
    assert code == 0  # the kubelet's SIGTERM after the hooks: a clean exit
