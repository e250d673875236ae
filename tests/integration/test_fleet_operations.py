"""Fleet operations on the real local fleet: drains, rollouts, disconnects, admin auth."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.helpers import (
    ON_EVERY_REDIS,
    cluster_hosts,
    envoy_get,
    open_ws,
    pod_of,
    unlimited_session,
    wait_for,
)
from wsfleet_client import Backoff
from wsfleet_client.client import Client
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.ports import free_port
from wsfleet_tools.launcher.rollout import RolloutStatus, rollout

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


async def _drain_and_wait(fleet: LocalFleet, pods: list[str], budget_s: float) -> None:
    status, answer = await _admin(fleet, "POST", "/drain", {"pods": pods, "budget_s": budget_s})
    assert status == 202, answer
    drain_id = answer["drain_id"]  # type: ignore[index]

    async def done() -> bool:
        _, progress = await _admin(fleet, "GET", f"/drain/{drain_id}")
        return progress["state"] == "done"  # type: ignore[index]

    await wait_for(done, timeout_s=budget_s + 20, interval_s=0.05)


async def _pod_states(fleet: LocalFleet) -> dict[str, str]:
    _, answer = await _admin(fleet, "GET", "/pods")
    return {pod["pod_id"]: pod["state"] for pod in answer["pods"]}  # type: ignore[index]


async def _first_try(fleet: LocalFleet, session: aiohttp.ClientSession, user: str) -> str:
    """One handshake through Envoy and one echo, no retry: the pod that served ``user``."""
    try:
        ws, pod = await open_ws(fleet, session, user)
    except aiohttp.WSServerHandshakeError as refused:  # say who refused, and why
        headers = dict(refused.headers or {})
        raise AssertionError(f"{user}: HTTP {refused.status}, headers {headers}") from None
    await ws.send_str("served")
    message = await ws.receive(timeout=10)
    await ws.close()
    assert message.data == "served", message
    return pod


async def test_a_drained_pod_that_stays_up_locks_no_one_out(fleet_factory) -> None:
    """The drained pod keeps running: its users are served on the survivor at once."""
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 60)
        placement = {t.user: t.connects[0][1] for t in clients}
        on_target = [t for t in clients if placement[t.user] == "sidecar-2"]
        others = [t for t in clients if placement[t.user] == "sidecar-1"]
        assert len(on_target) >= 10 and len(others) >= 10, collections.Counter(placement.values())

        await _drain_and_wait(fleet, ["sidecar-2"], budget_s=3)
        finished = time.monotonic()
        # every drained user, with a new connection and a single try, is served on the survivor
        served_on = await asyncio.gather(*(_first_try(fleet, session, t.user) for t in on_target))
        served_within = time.monotonic() - finished
        assert set(served_on) == {"sidecar-1"}
        assert served_within <= 2.0, served_within
        assert (await _pod_states(fleet))["sidecar-2"] == "drained"
        assert fleet.info.sidecars["sidecar-2"].child.running
        assert (await cluster_hosts(fleet, "gateways"))["sidecar-2"] == "DRAINING"

        await wait_for(lambda: _all_connected(clients), 15)
        for tracked in on_target:  # the SDK: a 1012, then straight onto the survivor
            assert [code for _, code, _ in tracked.closes] == [1012]
            assert tracked.client.pod == "sidecar-1"
        for tracked in others:  # untouched: one connection, never closed
            assert tracked.closes == [] and len(tracked.connects) == 1
        assert sum(t.client.stats.failures for t in clients) == 0  # no refused handshake at all
        for tracked in clients:
            await tracked.client.close()


async def test_a_gateway_refusing_with_503_before_envoy_knows_is_retried_on_another(
    fleet_factory,
) -> None:
    """The race between a pod's drain and Envoy hearing of it costs the client nothing."""
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:
        users = [f"race-{n}" for n in range(60)]
        placement = {user: await pod_of(fleet, session, user) for user in users}
        on_two = [user for user in users if placement[user] == "sidecar-2"]
        assert on_two
        # with the control plane down, Envoy keeps routing to sidecar-2 as HEALTHY: the same
        # view it has in the milliseconds between a drain and the EDS update
        xds = fleet.supervisor.find("xds")
        assert xds is not None
        await xds.stop(5.0, signal.SIGKILL)
        pod = fleet.info.sidecars["sidecar-2"]
        async with session.post(
            f"http://127.0.0.1:{pod.admin_port}/drain",
            json={"budget_s": 0},
            headers={"Authorization": f"Bearer {fleet.pod_admin_token('sidecar-2')}"},
        ) as response:
            assert response.status == 202
        assert (await cluster_hosts(fleet, "gateways"))["sidecar-2"] == "HEALTHY"
        retries_before = await _envoy_stat(fleet, "cluster.gateways.upstream_rq_retry")
        for user in on_two:
            try:
                assert await _first_try(fleet, session, user) == "sidecar-1"
            except AssertionError as failed:  # what Envoy saw, to tell why
                stats = await envoy_get(
                    fleet,
                    "/stats?filter=cluster.gateways.(health_check|upstream_rq_retry"
                    "|retry_or_shadow|membership|upstream_rq_5|upstream_rq_(rx|tx)_reset"
                    "|upstream_cx_connect_fail|upstream_cx_destroy|upstream_rq_pending_failure)",
                )
                raise AssertionError(f"{failed}\n{stats}") from None
        retried = await _envoy_stat(fleet, "cluster.gateways.upstream_rq_retry") - retries_before
        assert retried >= len(on_two)


async def _envoy_stat(fleet: LocalFleet, name: str) -> int:
    text = await envoy_get(fleet, f"/stats?filter=^{name}$")
    for line in str(text).splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


async def test_pods_shows_every_state_and_undrain_puts_a_pod_back(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=3)
    async with unlimited_session() as session:
        users = [f"state-{n}" for n in range(30)]
        placement = {user: await pod_of(fleet, session, user) for user in users}
        held = []
        for n in range(4):  # sessions on sidecar-1, so that a long drain is seen draining
            port = fleet.info.sidecars["sidecar-1"].port
            user = f"held-{n}"
            held.append(
                await session.ws_connect(
                    f"ws://127.0.0.1:{port}/ws?user={user}",
                    headers={"Authorization": f"Bearer {fleet.token(user)}"},
                )
            )
        status, _ = await _admin(fleet, "POST", "/drain", {"pod": "sidecar-1", "budget_s": 600})
        assert status == 202
        await _drain_and_wait(fleet, ["sidecar-2"], budget_s=0)
        await fleet.stop_sidecar("sidecar-3")

        async def seen() -> bool:
            return await _pod_states(fleet) == {
                "sidecar-1": "draining",
                "sidecar-2": "drained",
                "sidecar-3": "gone",
            }

        await wait_for(seen, timeout_s=30)
        for pod_id, status_code, words in (
            ("sidecar-3", 404, "gone"),
            ("sidecar-9", 404, "unknown pod"),
        ):
            status, answer = await _admin(fleet, "POST", "/undrain", {"pod": pod_id})
            assert status == status_code and words in answer["error"], answer  # type: ignore[index]
        for pod_id, previous in (("sidecar-1", "draining"), ("sidecar-2", "drained")):
            status, answer = await _admin(fleet, "POST", "/undrain", {"pod": pod_id})
            assert status == 200 and answer["previous_state"] == previous, answer  # type: ignore[index]
        status, answer = await _admin(fleet, "POST", "/undrain", {"pod": "sidecar-1"})
        assert status == 409 and "serving already" in answer["error"]  # type: ignore[index]

        async def healthy_again() -> bool:
            hosts = await cluster_hosts(fleet, "gateways")
            return hosts.get("sidecar-1") == hosts.get("sidecar-2") == "HEALTHY"

        await wait_for(healthy_again, timeout_s=30)
        assert (await _pod_states(fleet))["sidecar-1"] == "serving"
        # sidecar-2's users are back on it (sidecar-3 is gone: its users moved)
        for user in users:
            if placement[user] == "sidecar-2":
                assert await _first_try(fleet, session, user) == "sidecar-2"
        for ws in held:
            await ws.close()


async def test_a_rollout_after_a_manual_drain_succeeds_and_serves_every_user(
    fleet_factory,
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2)
    async with unlimited_session() as session:
        clients = await _clients(fleet, session, 60)
        await _drain_and_wait(fleet, ["sidecar-2"], budget_s=1)
        await wait_for(lambda: _all_connected(clients), 15)
        status = await rollout(fleet, RolloutStatus(), budget_s=3)
        assert status.phase == "done", status.message
        assert status.blue == ["sidecar-1", "sidecar-2"]
        assert status.green == ["sidecar-3", "sidecar-4"]
        assert await _pod_states(fleet) == {
            "sidecar-1": "gone",
            "sidecar-2": "gone",
            "sidecar-3": "serving",
            "sidecar-4": "serving",
        }
        await wait_for(lambda: _all_connected(clients), 15)
        assert {t.client.pod for t in clients} <= {"sidecar-3", "sidecar-4"}
        assert sum(t.client.stats.failures for t in clients) == 0
        served_on = await asyncio.gather(*(_first_try(fleet, session, t.user) for t in clients))
        assert set(served_on) == {"sidecar-3", "sidecar-4"}
        for tracked in clients:
            await tracked.client.close()


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


@ON_EVERY_REDIS
async def test_disconnect_by_user_closes_exactly_that_users_connections_on_every_pod(
    fleet_factory, redis_cluster: int
) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=2, redis_cluster=redis_cluster)
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


def _readme_operations() -> list[list[str]]:
    """The commands of the README's "Operating the fleet" section, as written there."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Operating the fleet", 1)[1].split("\n## ", 1)[0]
    return [
        shlex.split(line, comments=True)
        for line in section.splitlines()
        if line.startswith(".venv/bin/wsfleet ")
    ]


def test_every_command_of_the_readme_operations_section_works_verbatim(tmp_path: Path) -> None:
    from tests.integration.test_launcher import _start_and_wait_up, _up

    argv, port, _ = _up(tmp_path, "--sidecars", "2")
    launcher = _start_and_wait_up(argv)
    threading.Thread(target=launcher.communicate, daemon=True).start()  # keep its pipe empty
    state_dir = tmp_path / "state"
    # the commands find this fleet from its state dir, as they find `make up`'s in .wsfleet
    env = {**os.environ, "WSFLEET_STATE_DIR": str(state_dir)}

    def wsfleet(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ROOT / ".venv/bin/wsfleet"), *args],
            capture_output=True,
            text=True,
            timeout=90,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )

    try:
        commands = _readme_operations()
        assert [c[1] for c in commands] == [
            "pods",
            "drain",
            "undrain",
            "disconnect",
            "rollout",
            "pods",
        ], commands
        outputs = {}
        for command in commands:
            if command[1] == "disconnect":  # someone to disconnect: an interactive client
                alice = subprocess.Popen(
                    [
                        str(ROOT / ".venv/bin/wsfleet"),
                        *("connect", f"ws://127.0.0.1:{port}/ws", "--user", "alice"),
                    ],
                    stdin=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                assert alice.stderr is not None
                assert alice.stderr.readline().startswith("connected to"), "alice is not in"
            done = wsfleet(*command[1:])
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs[" ".join(command[1:])] = done
        first = outputs["pods"].stdout.splitlines()
        assert first[0].split()[:4] == ["POD", "STATE", "ADDRESS", "POOL"]
        drained = outputs["drain sidecar-2 --budget 10 --wait"]
        assert "done: sidecar-2" in drained.stdout
        # no terminal: a few progress lines, not one per poll
        assert 1 <= drained.stderr.count("\n") <= 12, drained.stderr
        assert "drained -> serving" in outputs["undrain sidecar-2"].stdout
        assert (
            "closed 1 connection"
            in outputs["disconnect --user alice --code 4001 --reason moderated"].stdout
        )
        assert "closed by server: code 4001" in alice.communicate(timeout=10)[1]
        assert outputs["rollout --budget 10"].stdout.startswith("rollout done")
        pods = json.loads(outputs["pods --json"].stdout)
        states = {pod["pod_id"]: (pod["pool"], pod["state"]) for pod in pods}
        assert states == {
            "api-1": ("api", "serving"),  # the server API's instances are pods of pool api
            "api-2": ("api", "serving"),
            "sidecar-1": ("gateways", "gone"),
            "sidecar-2": ("gateways", "gone"),
            "sidecar-3": ("gateways", "serving"),
            "sidecar-4": ("gateways", "serving"),
        }
        # a refusal shows the server's reason verbatim, with the documented exit codes
        unknown = wsfleet("drain", "sidecar-9")
        assert unknown.returncode == 1
        assert unknown.stderr.strip() == (
            "wsfleet: error: POST /drain: HTTP 404: unknown pod(s): sidecar-9"
        )
        serving = wsfleet("undrain", "sidecar-3")
        assert serving.returncode == 1 and "HTTP 409: pod 'sidecar-3' is serving" in serving.stderr
        refused = wsfleet("pods", "--admin-token", "x" * 20)
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
        nowhere = wsfleet("pods", "--admin-url", f"http://127.0.0.1:{free_port()}")
        assert nowhere.returncode == 4 and "cannot reach the control plane" in nowhere.stderr
        assert wsfleet("--version").stdout.startswith("wsfleet ")
    finally:
        launcher.terminate()
        launcher.wait(timeout=60)


def test_the_openapi_documents_describe_exactly_the_served_routes() -> None:
    from aiohttp import web

    from sidecar.admin_api import add_admin_routes
    from wsfleet.registry.memory import MemoryRegistry
    from xds_server.fleet_admin import FleetAdmin
    from xds_server.pod_history import PodHistory

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
    FleetAdmin(MemoryRegistry(), "t" * 20, PodHistory(time.time), time.time).add_routes(control)
    control_plane_paths = documented("control-plane.yaml")
    assert served(control) <= control_plane_paths
    assert control_plane_paths - served(control) == {
        ("get", "/metrics"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/"),  # the fleet page (xds_server/fleet_events.py)
        ("get", "/fleet-page/{name}"),
        ("get", "/fleet/summary"),
        ("get", "/fleet/events"),
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
