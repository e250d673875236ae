"""Fleet operations on the real local fleet: drains, rollouts, disconnects, admin auth."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.helpers import unlimited_session, wait_for
from wsfleet.launcher.fleet import LocalFleet
from wsfleet.launcher.rollout import RolloutStatus, rollout
from wsfleet_client import Backoff
from wsfleet_client.client import Client

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Tracked:
    """One SDK client and what happened to it."""

    user: str
    client: Client
    connects: list[tuple[float, str]] = field(default_factory=list)
    closes: list[tuple[float, int, str]] = field(default_factory=list)


async def _clients(
    fleet: LocalFleet, session: aiohttp.ClientSession, count: int, prefix: str = "user"
) -> list[Tracked]:
    tracked = []
    for n in range(count):
        user = f"{prefix}-{n}"
        item = Tracked(user, None)  # type: ignore[arg-type]
        item.client = Client(
            fleet.client_url,
            user,
            fleet.token(user),
            backoff=Backoff(base_s=0.1, cap_s=2.0),
            session=session,
            on_connect=lambda pod, item=item: item.connects.append((time.monotonic(), pod)),
            on_close=lambda code, reason, item=item: item.closes.append(
                (time.monotonic(), code, reason)
            ),
        )
        item.client.start()
        tracked.append(item)
    await asyncio.wait_for(asyncio.gather(*(t.client.connected.wait() for t in tracked)), 60)
    return tracked


async def _admin(
    fleet: LocalFleet, method: str, path: str, body: object = None, token: str | None = "ok"
) -> tuple[int, object]:
    headers = (
        {}
        if token is None
        else {"Authorization": f"Bearer {fleet.admin_token if token == 'ok' else token}"}
    )
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, fleet.admin_url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def test_a_drain_closes_one_pods_clients_with_1012_evenly_and_moves_only_them(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=3)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 300)
        placement = {t.user: t.connects[0][1] for t in clients}
        target = collections.Counter(placement.values()).most_common(1)[0][0]
        on_target = [t for t in clients if placement[t.user] == target]
        others = [t for t in clients if placement[t.user] != target]
        started = time.monotonic()
        status, answer = await _admin(fleet, "POST", "/drain", {"pod": target, "budget_s": 10})
        assert status == 202, answer
        drain_id = answer["drain_id"]  # type: ignore[index]

        async def done() -> bool:
            _, progress = await _admin(fleet, "GET", f"/drain/{drain_id}")
            return progress["state"] == "done"  # type: ignore[index]

        await wait_for(done, timeout_s=20, interval_s=0.25)
        _, progress = await _admin(fleet, "GET", f"/drain/{drain_id}")
        assert progress["total"] == len(on_target) and progress["left"] == 0  # type: ignore[index]
        await wait_for(lambda: _all_connected(on_target), 15)
        for tracked in clients:
            await tracked.client.close()

    close_times = []
    for tracked in on_target:
        assert len(tracked.closes) == 1, (tracked.closes, tracked.connects)
        [(at, code, reason)] = tracked.closes
        assert code == 1012 and "retry_after_ms=" in reason
        assert at - started <= 10.5
        close_times.append(at - started)
        assert tracked.connects[-1][1] not in (target, "")  # reconnected elsewhere
    for tracked in others:  # untouched: one connection, never closed
        assert tracked.closes == [] and len(tracked.connects) == 1
    per_second = collections.Counter(int(t) for t in close_times)
    mean = len(close_times) / 9  # spread over 90 % of the budget
    assert max(per_second.values()) <= 2 * mean, per_second


async def _all_connected(clients: list[Tracked]) -> bool:
    return all(t.client.connected.is_set() for t in clients)


async def test_a_blue_green_rollout_moves_every_client_to_green(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=3)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 300)
        status = await rollout(fleet, RolloutStatus(), budget_s=10)
        assert status.phase == "done", status.message
        assert status.green == ["sidecar-4", "sidecar-5", "sidecar-6"]
        await wait_for(lambda: _all_connected(clients), 15)
        assert {t.client.pod for t in clients} <= set(status.green)
        attempts = sum(t.client.stats.attempts for t in clients)
        failures = sum(t.client.stats.failures for t in clients)
        assert 1 - failures / attempts >= 0.999, (failures, attempts)
        longest_gap = max(max(t.client.stats.disconnected_s) for t in clients)
        assert longest_gap <= 10 + 2.0  # the budget, plus the backoff cap
        assert status.success_rate >= 0.999
        for tracked in clients:
            await tracked.client.close()


async def test_a_rollout_whose_green_fails_rolls_back_to_blue(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 100)
        # green pods that refuse every handshake (no routing key where they look)
        status = await rollout(
            fleet, RolloutStatus(), budget_s=8, green_args=("--routing-key", "header:x-missing")
        )
        assert status.phase == "rolled_back", status.message
        assert status.success_rate < 0.999
        assert set(fleet.info.sidecars) == {"sidecar-1", "sidecar-2"}
        await fleet.wait_hosts_healthy({"sidecar-1", "sidecar-2"}, timeout_s=10)
        await wait_for(lambda: _all_connected(clients), 20)
        assert {t.client.pod for t in clients} <= {"sidecar-1", "sidecar-2"}
        for tracked in clients:
            await tracked.client.close()


async def test_disconnect_by_user_closes_exactly_that_users_connections_on_every_pod(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:

        def direct(pod: str, user: str):  # type: ignore[no-untyped-def]
            port = fleet.info.sidecars[pod].port
            return session.ws_connect(
                f"ws://127.0.0.1:{port}/ws?user={user}",
                headers={"Authorization": f"Bearer {fleet.token(user)}"},
            )

        targets = [
            await direct("sidecar-1", "target"),
            await direct("sidecar-2", "target"),
            await direct("sidecar-2", "target"),
        ]
        bystanders = [await direct("sidecar-1", "bystander"), await direct("sidecar-2", "other")]
        await wait_for(lambda: _registered_count(fleet, "target", 3), 5)
        status, answer = await _admin(
            fleet, "POST", "/disconnect", {"user_id": "target", "code": 4001, "reason": "moderated"}
        )
        assert status == 200 and answer["closed"] == 3, answer  # type: ignore[index]
        assert sorted(answer["pods"]) == ["sidecar-1", "sidecar-2"]  # type: ignore[index]
        for ws in targets:
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 4001
            assert message.extra == "moderated"
        for ws in bystanders:
            await ws.send_str("still here")
            assert (await ws.receive(timeout=5)).data == "still here"
        status, answer = await _admin(fleet, "GET", "/connections?user_id=bystander")
        [record] = answer["connections"]  # type: ignore[index]
        assert record["pod_id"] == "sidecar-1"
        status, answer = await _admin(
            fleet, "POST", "/disconnect", {"connection_id": record["connection_id"]}
        )
        assert (status, answer["closed"]) == (200, 1)  # type: ignore[index]
        assert (await bystanders[0].receive(timeout=5)).data == 1000
        status, answer = await _admin(fleet, "POST", "/disconnect", {"user_id": "nobody"})
        assert status == 404 and "nobody" in answer["error"]  # type: ignore[index]
        status, _ = await _admin(fleet, "GET", "/connections/0123456789abcdef")
        assert status == 404
        for ws in bystanders:
            await ws.close()


async def _registered_count(fleet: LocalFleet, user: str, count: int) -> bool:
    _, answer = await _admin(fleet, "GET", f"/connections?user_id={user}")
    return len(answer["connections"]) == count  # type: ignore[index]


async def test_admin_calls_without_the_right_token_are_refused_and_change_nothing(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    for token in (None, "wrong-token"):
        for method, path, body in (
            ("POST", "/drain", {"pod": "sidecar-1", "budget_s": 1}),
            ("POST", "/disconnect", {"user_id": "x"}),
            ("GET", "/pods", None),
            ("GET", "/connections?user_id=x", None),
            ("GET", "/debug/nodes", None),
        ):
            status, answer = await _admin(fleet, method, path, body, token=token)
            assert status == 401, (method, path)
            assert "admin token" in answer["error"]  # type: ignore[index]
        pod = fleet.info.sidecars["sidecar-1"]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{pod.admin_port}/drain",
                json={"budget_s": 1},
                headers={} if token is None else {"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            assert response.status == 401
    _, pods = await _admin(fleet, "GET", "/pods")
    assert [p["state"] for p in pods["pods"]] == ["serving"]  # type: ignore[index]
    assert await fleet.round_trip("alice", "unchanged") == "unchanged"


async def test_malformed_admin_requests_get_400_or_404_with_a_message(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    headers = {"Authorization": f"Bearer {fleet.admin_token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for path, body, status in (
            ("/drain", b"{not json", 400),
            ("/drain", b"[1, 2]", 400),
            ("/drain", b'{"pod": "sidecar-1", "budget_s": -1}', 400),
            ("/drain", b'{"pod": "sidecar-1", "budget_s": "soon"}', 400),
            ("/drain", b'{"budget_s": 5}', 400),
            ("/drain", b'{"pod": "sidecar-9", "budget_s": 5}', 404),
            ("/drain", b'{"region": "mars", "budget_s": 5}', 404),
            ("/disconnect", b'{"user_id": "a", "connection_id": "b"}', 400),
        ):
            async with session.post(fleet.admin_url + path, data=body, headers=headers) as response:
                answer = await response.json(content_type=None)
                assert response.status == status, (path, body, answer)
                assert isinstance(answer["error"], str) and answer["error"]
    _, pods = await _admin(fleet, "GET", "/pods")
    assert [p["state"] for p in pods["pods"]] == ["serving"]  # type: ignore[index]


async def test_sigterm_on_a_sidecar_drains_it_with_1012(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 40)
        on_one = [t for t in clients if t.connects[0][1] == "sidecar-1"]
        assert on_one
        await fleet.stop_sidecar("sidecar-1")  # SIGTERM
        for tracked in on_one:
            assert tracked.closes and tracked.closes[0][1] == 1012
        await wait_for(lambda: _all_connected(clients), 10)
        assert {t.client.pod for t in clients} == {"sidecar-2"}
        for tracked in clients:
            await tracked.client.close()


def test_the_cli_lists_pods_drains_with_progress_and_disconnects(tmp_path: Path) -> None:
    from tests.integration.test_launcher import _start_and_wait_up, _up

    argv, _, admin_port = _up(tmp_path, "--sidecars", "2")
    launcher = _start_and_wait_up(argv)
    common = [
        "--admin-url",
        f"http://127.0.0.1:{admin_port}",
        "--state-dir",
        str(tmp_path / "state"),
    ]

    def wsfleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wsfleet", *args], capture_output=True, text=True, timeout=60
        )

    try:
        pods = wsfleet("pods", *common)
        assert pods.returncode == 0, pods.stderr
        assert pods.stdout.splitlines()[0].split()[:3] == ["POD", "STATE", "ADDRESS"]
        assert "sidecar-1" in pods.stdout and "serving" in pods.stdout
        drained = wsfleet("drain", "sidecar-2", "--budget", "1", "--wait", *common)
        assert drained.returncode == 0, drained.stderr
        assert "done: sidecar-2" in drained.stdout
        assert "closed" in drained.stderr and "[" in drained.stderr  # the progress lines
        gone = wsfleet("disconnect", "--user", "nobody", *common)
        assert gone.returncode != 0 and "HTTP 404" in gone.stderr
        refused = wsfleet(
            "pods", "--admin-url", f"http://127.0.0.1:{admin_port}", "--admin-token", "x" * 20
        )
        assert refused.returncode != 0 and "HTTP 401" in refused.stderr
    finally:
        launcher.terminate()
        launcher.communicate(timeout=60)


def test_the_openapi_documents_describe_exactly_the_served_routes() -> None:
    from aiohttp import web

    from sidecar.admin_api import add_admin_routes
    from wsfleet.registry.memory import MemoryRegistry
    from xds_server.fleet_admin import FleetAdmin

    def served(app: web.Application) -> set[tuple[str, str]]:
        routes = set()
        for route in app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter")
            if route.method != "HEAD":
                routes.add((route.method.lower(), path))
        return routes

    def documented(name: str) -> set[tuple[str, str]]:
        spec = yaml.safe_load((ROOT / "docs" / "openapi" / name).read_text())
        assert spec["openapi"].startswith("3.")
        return {(method, path) for path, item in spec["paths"].items() for method in item}

    control = web.Application()
    FleetAdmin(MemoryRegistry(), "t" * 20).add_routes(control)
    control_plane_paths = documented("control-plane.yaml")
    assert served(control) <= control_plane_paths
    assert control_plane_paths - served(control) == {
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/debug/nodes"),
        ("get", "/debug/config"),
        ("get", "/debug/policy"),
        ("get", "/debug/membership"),
    }
    sidecar = web.Application()
    add_admin_routes(sidecar, None, None, "t" * 20)  # type: ignore[arg-type]
    assert served(sidecar) == documented("sidecar-admin.yaml") - {
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    }
