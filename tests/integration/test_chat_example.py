"""The chat example in real headless Chromium: two people on two different gateways talk
in one room, see each other in its presence list, and the backend stamps each message with
its author (a client cannot pose as someone else)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import Chromium, Page
from tests.helpers import pod_of, unlimited_session
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.ports import free_port

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parents[2] / "tests" / "artifacts"


async def _users_on_two_gateways(fleet: LocalFleet) -> tuple[str, str]:
    """Two user names that Envoy hashes onto different gateways."""
    async with unlimited_session() as session:
        seen: dict[str, str] = {}
        for n in range(40):
            user = f"person-{n}"
            pod = await pod_of(fleet, session, user)
            for other, other_pod in seen.items():
                if other_pod != pod:
                    return other, user
            seen[user] = pod
    raise AssertionError("forty users all landed on one gateway")


async def _enter(chromium: Chromium, fleet: LocalFleet, user: str) -> Page:
    page = await chromium.open(fleet.info.chat_url, ready="!!window.chat")
    await page.evaluate(
        f"document.getElementById('name').value = {json.dumps(user)};"
        "document.getElementById('login').requestSubmit(); true"
    )
    await page.wait_for("window.chat.client && window.chat.client.connected", 20)
    return page


async def test_two_pages_on_two_gateways_chat_in_one_room(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2, app="chat", chat_port=free_port())
    alice, bob = await _users_on_two_gateways(fleet)
    chromium = Chromium()
    await chromium.start()
    try:
        first, second = await _enter(chromium, fleet, alice), await _enter(chromium, fleet, bob)
        pods = {
            await first.evaluate("window.chat.client.pod"),
            await second.evaluate("window.chat.client.pod"),
        }
        assert len(pods) == 2, "the two pages should be on two gateways"
        # the backend subscribed both to the lobby (server-side)
        for page in (first, second):
            await page.wait_for("window.chat.rooms.has('chat:lobby')", 20)
        for page in (first, second):
            await page.evaluate("window.chat.join('test'), true")
        room = "window.chat.rooms.get('chat:test')"
        both_here = f"[...new Set({room}.people.values())].sort().join(',')"
        await first.wait_for(f"{both_here} === {json.dumps(','.join(sorted((alice, bob))))}", 20)
        await second.wait_for(f"{both_here} === {json.dumps(','.join(sorted((alice, bob))))}", 20)
        # the second page answers once it has the first's message (two publishers on two
        # gateways have no order between them until one has seen the other)
        await first.evaluate("window.chat.say('chat:test', 'hello from the first page'), true")
        await second.wait_for(f"{room}.messages.length === 1", 20)
        await second.evaluate("window.chat.say('chat:test', 'and back from the second'), true")
        messages = f"{room}.messages.map((m) => [m.user, m.text])"
        expected = [[alice, "hello from the first page"], [bob, "and back from the second"]]
        for page in (first, second):
            await page.wait_for(f"{room}.messages.length === 2", 20)
            assert await page.evaluate(messages) == expected
        # what the backend refuses is refused, with its reason, and changes nothing
        await first.evaluate("window.chat.say('chat:test', '   '), true")
        await first.wait_for(
            "document.getElementById('error').textContent.startsWith('rejected')", 10
        )
        await first.evaluate("window.chat.show('chat:test'), true")
        ARTIFACTS.mkdir(exist_ok=True)
        await chromium.screenshot(first, ARTIFACTS / "chat-two-gateways.png")
        assert await second.evaluate(f"{room}.messages.length") == 2
    finally:
        await chromium.stop()
