"""A gateway whose host vanishes without a FIN (power loss, a cut link): every packet to
and from it is dropped (iptables on loopback, its port only). Envoy resets the streams it
held within the pool's ``upstream_keepalive`` bound: a quiet client's by TCP keepalive, and
a client that keeps sending, whose data then waits for an ACK that never comes, by
``TCP_USER_TIMEOUT`` (keepalive does not probe while data is in flight, and the kernel's
retransmissions alone would hold the stream for about 15 minutes)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import open_ws, wait_for
from wsfleet_tools.launcher.fleet import LocalFleet
from xds_server.policy_loader import default_policy_text

pytestmark = pytest.mark.integration

KEEPALIVE = "{time_s: 1, interval_s: 1, probes: 2}"  # a vanished host goes after 3 s
BOUND_S = 20.0  # far below the ~15 min of retransmissions, well above the 3 s (busy CI)
ENDED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


def _iptables(*rule: str) -> None:
    subprocess.run(["iptables", "-w", "10", *rule], check=True, capture_output=True, timeout=30)


@contextmanager
def vanished(port: int) -> Iterator[None]:
    """Every TCP packet to or from ``port`` dropped, until the block ends."""
    rules = [
        ("INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"),
        ("OUTPUT", "-p", "tcp", "--sport", str(port), "-j", "DROP"),
    ]
    added = []
    try:
        for rule in rules:
            _iptables("-I", *rule)
            added.append(rule)
        yield
    finally:
        for rule in added:
            _iptables("-D", *rule)


async def _ended_within(ws: aiohttp.ClientWebSocketResponse, talk: bool) -> float:
    """Seconds until the socket ends; a talking client sends every 0.2 s meanwhile."""
    started = time.monotonic()
    while time.monotonic() - started < BOUND_S:
        if talk:
            await ws.send_str("still here?")
        try:
            message = await ws.receive(timeout=0.2)
        except TimeoutError:
            continue
        if message.type in ENDED:
            return time.monotonic() - started
    raise AssertionError(
        f"the {'talking' if talk else 'quiet'} client still open after {BOUND_S} s"
    )


async def _echoes(ws: aiohttp.ClientWebSocketResponse) -> bool:
    await ws.send_str("ping?")
    message = await ws.receive(timeout=5)
    return message.type is aiohttp.WSMsgType.TEXT and message.data == "ping?"


async def test_envoy_lets_go_of_a_vanished_gateways_streams_quiet_or_sending(
    fleet_factory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        default_policy_text().replace(
            "  - name: gateways\n", f"  - name: gateways\n    upstream_keepalive: {KEEPALIVE}\n", 1
        )
    )
    fleet: LocalFleet = await fleet_factory(policy_path=policy, sidecars=1)
    (gateway,) = fleet.info.sidecars.values()
    async with aiohttp.ClientSession() as session:

        async def connected() -> bool:
            try:
                ws, _ = await open_ws(fleet, session, "probe")
            except aiohttp.WSServerHandshakeError:
                return False  # the gateway not in Envoy's endpoints yet
            await ws.close()
            return True

        await wait_for(connected, 20)
        quiet, _ = await open_ws(fleet, session, "quiet-user")
        talking, _ = await open_ws(fleet, session, "talking-user")
        assert await _echoes(quiet) and await _echoes(talking)
        with vanished(gateway.port):
            waited = await asyncio.gather(
                _ended_within(quiet, talk=False), _ended_within(talking, talk=True)
            )
    assert all(seconds >= 1.0 for seconds in waited), waited  # not before the probes began
