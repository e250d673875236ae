"""The live fleet page (GET / on the control-plane admin) in headless Chromium, and
``wsfleet status --json``, against a fleet of their own."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from tests.browser import Chromium
from tests.helpers import unlimited_session
from wsfleet_tools.launcher.fleet import LocalFleet
from xds_server.fleet_events import MAX_WATCHERS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WSFLEET = [sys.executable, "-m", "wsfleet_tools"]
SCREENSHOT_FOR_DOCS = ROOT / "docs" / "fleet-page.png"

TOKEN_ASKED = "document.querySelector('#token-form')?.hidden === false"


def cell(pod: str, name: str) -> str:
    """A JavaScript expression: the text of one cell of a pod's row ('' while absent)."""
    return f"document.querySelector('tr[data-pod=\"{pod}\"] td.{name}')?.textContent ?? ''"


async def wsfleet_status_json(fleet: LocalFleet) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        *WSFLEET, "status", "--json", "--state-dir", str(fleet.state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    summary: dict[str, object] = json.loads(out)
    return summary


async def test_the_fleet_page_shows_the_fleet_and_a_drain_live(fleet_factory, tmp_path) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    admin = fleet.admin_url
    bearer = {"Authorization": f"Bearer {fleet.admin_token}"}
    chromium = Chromium()
    await chromium.start()
    async with unlimited_session() as http:
        try:
            # the page is public and holds no data; its data is behind the token
            async with http.get(f"{admin}/") as response:
                assert response.status == 200 and "text/html" in response.content_type
                assert "script-src 'self'" in response.headers["Content-Security-Policy"]
                assert fleet.admin_token not in await response.text()
            async with http.get(f"{admin}/fleet-page/..%2Ffleet_admin.py") as response:
                assert response.status == 404
            for headers in ({}, {"Authorization": "Bearer wrong-token-000000"}):
                async with http.get(f"{admin}/fleet/events", headers=headers) as response:
                    assert response.status == 401

            port = fleet.info.sidecars["sidecar-1"].port
            held = [
                await http.ws_connect(
                    f"ws://127.0.0.1:{port}/ws?user=page-{n}",
                    headers={"Authorization": f"Bearer {fleet.token(f'page-{n}')}"},
                )
                for n in range(3)
            ]

            page = await chromium.open(f"{admin}/", ready=TOKEN_ASKED)
            await page.evaluate(
                f"""(() => {{
                  document.querySelector('#token').value = {json.dumps(fleet.admin_token)};
                  document.querySelector('#token-form').requestSubmit();
                  return true;
                }})()"""
            )
            await page.wait_for(f"{cell('sidecar-1', 'connections')} === '3'")
            await page.wait_for(f"{cell('sidecar-2', 'connections')} === '0'")
            assert await page.evaluate(cell("sidecar-1", "state")) == "serving"
            assert await page.evaluate(cell("sidecar-2", "state")) == "serving"
            assert await page.evaluate(
                "sessionStorage.getItem('wsfleet-admin-token') !== null"
                " && localStorage.length === 0 && !location.href.includes('token')"
            )
            # the Envoy, with the versions it ACKed: those of the policy's snapshot
            await page.wait_for("document.querySelectorAll('#envoys tr[data-node]').length === 1")
            snapshot = await page.evaluate("window.fleetSummary.policy.snapshot_versions")
            acked = await page.evaluate("document.querySelector('#envoys td.acked').textContent")
            for kind in ("lds", "cds"):
                assert f"{kind} {snapshot[kind]}" in acked
            version = await page.evaluate("document.querySelector('#policy-version').textContent")
            assert len(version) == 12

            # a drain shows within 2 s of its start
            async with http.post(
                f"{admin}/drain", json={"pod": "sidecar-1", "budget_s": 600}, headers=bearer
            ) as response:
                assert response.status == 202
                drain_id = (await response.json())["drain_id"]
            started = time.monotonic()
            await page.wait_for(
                f"document.querySelector('tr[data-drain=\"{drain_id}\"]')?.dataset.pods"
                " === 'sidecar-1'",
                timeout_s=10,
            )
            await page.wait_for(f"{cell('sidecar-1', 'state')} === 'draining'", timeout_s=10)
            shown_after = time.monotonic() - started
            assert shown_after < 2.0, f"the drain showed after {shown_after:.2f} s"

            await page._call(  # a desktop-sized window for the picture
                "Emulation.setDeviceMetricsOverride",
                width=1280,
                height=960,
                deviceScaleFactor=1,
                mobile=False,
            )
            shot = tmp_path / "fleet-page.png"
            await chromium.screenshot(page, shot)
            assert shot.read_bytes().startswith(b"\x89PNG")
            if not SCREENSHOT_FOR_DOCS.exists():  # the docs' picture, from a real run
                shutil.copy(shot, SCREENSHOT_FOR_DOCS)

            # the terminal shows the same fleet
            summary = await wsfleet_status_json(fleet)
            pods = {p["pod_id"]: p for p in summary["pods"]}  # type: ignore[attr-defined]
            assert {pod: p["state"] for pod, p in pods.items()} == {
                "sidecar-1": "draining",
                "sidecar-2": "serving",
            }
            assert pods["sidecar-1"]["connections"] == 3
            assert summary["policy"]["version"] == version  # type: ignore[index]

            # watchers are bounded (the page holds one stream)
            streams = [
                await http.get(f"{admin}/fleet/events", headers=bearer)
                for _ in range(MAX_WATCHERS - 1)
            ]
            assert all(s.status == 200 for s in streams)
            async with http.get(f"{admin}/fleet/events", headers=bearer) as refused:
                assert refused.status == 503
                assert "too many watchers" in (await refused.json())["error"]
            for stream in streams:
                stream.close()

            # forgetting the token empties the page and the tab's storage
            await page.evaluate("document.querySelector('#forget').click(), true")
            await page.wait_for(TOKEN_ASKED)
            assert await page.evaluate("sessionStorage.length === 0")
            for ws in held:
                await ws.close()
        finally:
            await chromium.stop()
