"""Draining one Envoy of two: its clients get paced 1012s, the other Envoy's none; its
``/edge/ready`` and new requests get 503 until it is undrained. Driven through the CLI,
as an operator would, on one fleet (bad input is checked on it first: it changes nothing)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from tests.helpers import open_ws, unlimited_session, wait_for
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

PER_ENVOY = 8  # raw WebSockets through each Envoy
BUDGET_S = 3.0
DELIST_S = 1.0


def _cli(fleet: LocalFleet, *argv: str) -> subprocess.CompletedProcess[str]:
    admin = ("--admin-url", fleet.admin_url, "--admin-token", fleet.admin_token)
    return subprocess.run(
        [sys.executable, "-m", "wsfleet_tools", "envoys", *argv, *admin],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _admin(
    fleet: LocalFleet, method: str, path: str, body: object = None, token: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {token or fleet.admin_token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fleet.admin_url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def _ready(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url.replace("ws://", "http://").replace("/ws", "/edge/ready")) as r:
        return r.status


async def test_draining_an_envoy_closes_only_its_clients_paced_and_refuses_new_ones(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2, envoys=2)
    urls = fleet.client_urls  # {"envoy": ..., "envoy-2": ...}
    one, two = urls["envoy"], urls["envoy-2"]
    async with unlimited_session() as session:
        # bad input: clear refusals, nothing changes
        for body, status in [
            ({}, 400),
            ({"node": "envoy-2", "zone": "zone-2"}, 400),
            ({"node": "nope"}, 404),
            ({"zone": "zone-9"}, 404),
            ({"zone": "zone-2", "budget_s": -1}, 400),
            ({"zone": "zone-2", "budget_s": "3"}, 400),
            ({"zone": "zone-2", "delist_s": 10_000}, 400),
        ]:
            code, answer = await _admin(fleet, "POST", "/envoys/drain", body)
            assert code == status and answer["error"], (body, code, answer)
        assert (await _admin(fleet, "POST", "/envoys/drain", {"zone": "zone-2"}, "bad"))[0] == 401
        assert (await _admin(fleet, "GET", "/envoys/drain/envoy-2"))[0] == 404
        assert (await _admin(fleet, "POST", "/envoys/undrain", {"node": "envoy-2"}))[0] == 404
        assert (await _admin(fleet, "POST", "/envoys/undrain", {}))[0] == 400
        code, listed = await _admin(fleet, "GET", "/envoys")
        envoys = {e["node"]: e for e in listed["envoys"]}  # type: ignore[attr-defined]
        assert {n: (e["zone"], e["draining"]) for n, e in envoys.items()} == {
            "envoy-1": ("zone-1", False),
            "envoy-2": ("zone-2", False),
        }
        assert await _ready(session, one) == 200 and await _ready(session, two) == 200

        # clients on both Envoys; one on each claims to have come through the other
        spoof = {"x-wsfleet-edge": "envoy-1"}
        ones = [(await open_ws(fleet, session, f"one-{n}", one))[0] for n in range(PER_ENVOY)]
        twos = [(await open_ws(fleet, session, f"two-{n}", two))[0] for n in range(PER_ENVOY)]
        ones.append(
            await session.ws_connect(
                f"{one}?user=one-spoof",
                headers={"Authorization": f"Bearer {fleet.token('one-spoof')}"}
                | {"x-wsfleet-edge": "envoy-2"},
            )
        )
        twos.append(
            await session.ws_connect(
                f"{two}?user=two-spoof",
                headers={"Authorization": f"Bearer {fleet.token('two-spoof')}"} | spoof,
            )
        )
        closes: list[tuple[float, int | None, str]] = []

        async def watch(ws: aiohttp.ClientWebSocketResponse) -> None:
            message = await ws.receive()
            closes.append((time.monotonic(), ws.close_code, str(message.extra or "")))

        watchers = [asyncio.create_task(watch(ws)) for ws in twos]

        started = time.monotonic()
        cli = asyncio.create_task(
            asyncio.to_thread(
                _cli,
                fleet,
                "drain",
                "zone-2",
                "--budget",
                f"{BUDGET_S:g}",
                "--delist",
                f"{DELIST_S:g}",
                "--wait",
            )
        )
        await wait_for(lambda: _is(session, two, 503), 10)
        assert not closes, "closes began before the Envoy was delisted"
        assert await _ready(session, one) == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_ws(fleet, session, "late", two)
        assert refused.value.status == 503 and refused.value.headers["Retry-After"]
        async with session.get(two.replace("ws://", "http://")) as response:
            assert response.status == 503 and "draining" in await response.text()
        ws, _ = await open_ws(fleet, session, "still-welcome", one)  # envoy-1 serves on
        await ws.close()
        code, view = await _admin(fleet, "GET", "/envoys/drain/envoy-2")
        assert (
            code == 200
            and view["node"] == "envoy-2"
            and view["state"]
            in (
                "delisting",
                "closing",
            )
        )

        done = await cli
        assert done.returncode == 0, done.stderr
        assert "drained" in done.stdout
        await asyncio.wait_for(asyncio.gather(*watchers), 10)
        assert len(closes) == len(twos)
        assert all(code == 1012 and "retry_after_ms=" in reason for _, code, reason in closes)
        times = sorted(at - started for at, _, _ in closes)
        assert times[0] >= DELIST_S * 0.9, times
        assert times[-1] - times[0] >= BUDGET_S / 3, f"closes not spread: {times}"
        for ws in ones:  # envoy-1's clients, the spoofer too, were never touched
            assert not ws.closed
            await ws.send_str("ping")
            assert (await asyncio.wait_for(ws.receive(), 10)).data == "ping"

        code, listed = await _admin(fleet, "GET", "/envoys")
        draining = {e["node"]: e["draining"] for e in listed["envoys"]}  # type: ignore[attr-defined]
        assert draining == {"envoy-1": False, "envoy-2": True}

        undone = await asyncio.to_thread(_cli, fleet, "undrain", "envoy-2")
        assert undone.returncode == 0, undone.stderr
        await wait_for(lambda: _is(session, two, 200), 10)
        back, _ = await open_ws(fleet, session, "back", two)
        await back.send_str("hello")
        assert (await asyncio.wait_for(back.receive(), 10)).data == "hello"
        for ws in [back, *ones]:
            await ws.close()


async def _is(session: aiohttp.ClientSession, url: str, status: int) -> bool:
    return await _ready(session, url) == status


async def test_every_control_plane_replica_lists_and_drains_every_envoy(fleet_factory) -> None:
    """Two replicas, two Envoys: each replica lists both, and drains an Envoy that streams
    from the other one."""
    fleet: LocalFleet = await fleet_factory(sidecars=1, envoys=2, xds_replicas=2)
    admins = {name: ports[1] for name, ports in fleet.info.xds_replicas.items()}
    assert len(admins) == 2

    async def on(port: int, method: str, path: str, body: object = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {fleet.admin_token}"}
        url = f"http://127.0.0.1:{port}{path}"
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, url, json=body, headers=headers) as response,
        ):
            return response.status, await response.json(content_type=None)

    async def connected_here(port: int) -> set[str]:
        _, answer = await on(port, "GET", "/debug/nodes")
        return {n["node_id"] for n in answer["nodes"] if n["connected"]}

    async def each_lists_both() -> bool:
        for port in admins.values():
            _, listed = await on(port, "GET", "/envoys")
            if {(e["node"], e["connected"]) for e in listed["envoys"]} != {
                ("envoy-1", True),
                ("envoy-2", True),
            }:
                return False
        return True

    await wait_for(each_lists_both, 20)
    # the Envoy to drain, and a replica it does not stream from
    where = {name: await connected_here(port) for name, port in admins.items()}
    name, node = next((n, e) for n in admins for e in ("envoy-1", "envoy-2") if e not in where[n])
    _, listed = await on(admins[name], "GET", "/envoys")
    shown = {e["node"]: e for e in listed["envoys"]}[node]
    assert shown["replica"] and shown["zone"] == f"zone-{node[-1]}"
    url = fleet.client_urls["envoy" if node == "envoy-1" else "envoy-2"]

    code, view = await on(admins[name], "POST", "/envoys/drain", {"node": node, "budget_s": 1})
    assert code == 202 and view["node"] == node, view
    async with unlimited_session() as session:
        await wait_for(lambda: _is(session, url, 503), 15)
        code, _ = await on(admins[name], "POST", "/envoys/undrain", {"node": node})
        assert code == 200
        await wait_for(lambda: _is(session, url, 200), 15)
