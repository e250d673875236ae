"""The JavaScript SDK in real headless Chromium against the local fleet."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.browser import Chromium
from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

SDK = Path(__file__).resolve().parents[2] / "sdk" / "js"

NO_UPGRADE_POLICY = """\
listeners:
  - name: public
    port: 8080
    routes: [websocket, events, poll]
routes:
  - name: websocket
    path_prefix: /ws
    pool: gateways
    kind: http            # this network refuses WebSocket upgrades
  - name: events
    path_prefix: /sse
    pool: gateways
    kind: sse
  - name: poll
    path_prefix: /poll
    pool: gateways
    kind: poll
pools:
  - name: gateways
"""


@pytest.fixture
async def browser_page():  # type: ignore[no-untyped-def]
    app = web.Application()
    app.router.add_static("/sdk/", SDK)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    chromium = Chromium()
    await chromium.start()
    try:
        yield chromium, f"http://127.0.0.1:{port}/sdk/examples/index.html"
    finally:
        await chromium.stop()
        await runner.cleanup()


START = """
(() => {
  window.received = [];
  window.client = new WsfleetClient({
    url: %(url)r, user: %(user)r, token: %(token)r,
    backoff: new Backoff({ baseMs: 100, capMs: 1000 }),
  });
  window.client.onmessage = (message) => window.received.push(message.data);
  window.client.start();
  return true;
})()
"""


async def test_a_page_receives_a_stream_and_survives_a_drain_of_its_pod(
    fleet_factory, browser_page
) -> None:
    chromium, page_url = browser_page
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    page = await chromium.open(page_url)
    await page.evaluate(
        START
        % {"url": fleet.client_url, "user": "browser-user", "token": fleet.token("browser-user")}
    )
    await page.wait_for("window.client.connected", 15)
    assert await page.evaluate("window.client.transport") == "websocket"
    pod = await page.evaluate("window.client.pod")
    await page.evaluate("window.client.send('/stream 40 100'), true")
    await page.wait_for("window.received.length >= 8", 15)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{fleet.admin_url}/drain",
            json={"pod": pod, "budget_s": 1},
            headers={"Authorization": f"Bearer {fleet.admin_token}"},
        ) as response,
    ):
        assert response.status == 202
    await page.wait_for("window.received.length >= 40", 30)
    # an echo after the stream: a duplicate of any stream message would come before it
    await page.evaluate("window.client.send('after the stream'), true")
    await page.wait_for("window.received.includes('after the stream')", 30)
    expected = [f"stream-{n}" for n in range(1, 41)] + ["after the stream"]
    assert await page.evaluate("window.received") == expected
    stats = await page.evaluate("window.client.stats")
    assert stats["resumes"] >= 1 and stats["closes"][0][0] == 1012
    assert await page.evaluate("window.client.pod") not in (pod, "")
    await page.evaluate("window.client.close(), true")


async def test_a_page_falls_back_to_sse_when_websocket_is_refused(
    fleet_factory, browser_page, tmp_path
) -> None:
    chromium, page_url = browser_page
    policy = tmp_path / "policy.yaml"
    policy.write_text(NO_UPGRADE_POLICY)
    fleet: LocalFleet = await fleet_factory(sidecars=1, policy_path=policy, probe="sse")
    page = await chromium.open(page_url)
    await page.evaluate(
        START
        % {"url": fleet.client_url, "user": "blocked-user", "token": fleet.token("blocked-user")}
    )
    await page.wait_for("window.client.connected", 20)
    assert await page.evaluate("window.client.transport") == "sse"
    await page.evaluate(
        "window.client.send('hello over sse'), window.client.send('/stream 5 20'), true"
    )
    await page.wait_for("window.received.length >= 6", 15)
    assert await page.evaluate("window.received") == ["hello over sse"] + [
        f"stream-{n}" for n in range(1, 6)
    ]
    await page.evaluate("window.client.close(), true")
