"""TLS at Envoy with certificates over SDS: rotation reaches new handshakes, drops nothing."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.certs import write_self_signed
from tests.helpers import envoy_stats, unlimited_session, wait_for, xds_get
from tests.policies import websocket_policy
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

POLICY = websocket_policy(8443, tls=True)


def _client_context(*certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


async def _served_serial(port: int, context: ssl.SSLContext) -> int:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_rotated_certificate_reaches_new_handshakes_and_live_wss_stay_up(
    fleet_factory, tmp_path: Path
) -> None:
    first = write_self_signed(tmp_path / "edge.crt", tmp_path / "edge.key", "edge-1")
    (tmp_path / "first.crt").write_bytes((tmp_path / "edge.crt").read_bytes())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    fleet: LocalFleet = await fleet_factory(policy_path=policy, sidecars=1)
    port = fleet.options.port
    trust_first = _client_context(tmp_path / "first.crt")
    assert await _served_serial(port, trust_first) == first.serial_number

    async with unlimited_session() as session:
        live = []
        for n in range(20):
            ws = await session.ws_connect(
                f"wss://localhost:{port}/ws?user=user-{n}",
                headers={"Authorization": f"Bearer {fleet.token(f'user-{n}')}"},
                ssl=trust_first,
            )
            live.append(ws)
        modified = (await envoy_stats(fleet, "listener_manager"))[
            "listener_manager.listener_modified"
        ]

        # rotate: write the new key and certificate (the watcher may see a torn pair
        # for one poll and reject it; the next poll sees the matching pair)
        (tmp_path / "next.key").write_bytes(b"")
        second = write_self_signed(tmp_path / "next.crt", tmp_path / "next.key", "edge-2")
        (tmp_path / "next.key").replace(tmp_path / "edge.key")
        (tmp_path / "next.crt").replace(tmp_path / "edge.crt")
        trust_both = _client_context(tmp_path / "first.crt", tmp_path / "edge.crt")

        async def rotated() -> bool:
            return await _served_serial(port, trust_both) == second.serial_number

        await wait_for(rotated, 30)
        assert all(not ws.closed for ws in live)
        for n, ws in enumerate(live):
            await ws.send_str(f"after-rotation-{n}")
            reply = await ws.receive(timeout=5)
            assert reply.type is aiohttp.WSMsgType.TEXT and reply.data == f"after-rotation-{n}"
        after = (await envoy_stats(fleet, "listener_manager"))["listener_manager.listener_modified"]
        assert after == modified

        metrics = await xds_get(fleet, "/metrics")
        [expiry] = [
            line
            for line in metrics.splitlines()
            if line.startswith(
                'wsfleet_xds_certificate_expiry_timestamp_seconds{certificate="edge"}'
            )
        ]
        assert 29 * 86400 < float(expiry.split()[-1]) - time.time() <= 30 * 86400

        # a certificate that does not parse is rejected; the last good one keeps serving
        (tmp_path / "edge.crt").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")

        async def rejected() -> bool:
            text = await xds_get(fleet, "/metrics")
            return 'wsfleet_xds_policy_reloads_total{outcome="rejected"}' in text

        await wait_for(rejected, 30)
        assert await _served_serial(port, trust_both) == second.serial_number
        config = await xds_get(fleet, "/debug/config")
        assert config["sds"]["resources"]["edge"]["config"]["tls_certificate"] == "<redacted>"
        for ws in live:
            await ws.close()
