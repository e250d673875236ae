"""``wsfleet up`` supervises its children as Kubernetes would (issue #23): a child killed
under it is restarted where it was, and the rest of the fleet keeps serving its clients."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.helpers import unlimited_session, wait_for
from wsfleet.readiness import read_ready
from wsfleet.tokens import mint_token, read_auth_key
from wsfleet_client import Backoff
from wsfleet_client.client import Client
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.ports import free_port, port_is_listening
from wsfleet_tools.launcher.restart_policy import RestartSettings

pytestmark = pytest.mark.integration

WSFLEET = [sys.executable, "-m", "wsfleet_tools"]
CLIENTS = 200
BACK_WITHIN_S = 10.0  # a killed replica or pod serves again within this (the bound)


class Launcher:
    """``wsfleet up`` as a subprocess, its output collected line by line."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def tail(self) -> str:
        return "\n".join(self.lines[-40:])


def _pid_of(text: str) -> int:
    """The one process whose command line mentions ``text``."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in process.info["cmdline"] or ()):
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert len(found) == 1, (text, found)
    return found[0]


async def _pool_health(session: aiohttp.ClientSession, admin_file: Path) -> dict[str, str]:
    """One Envoy's view of the gateway pool: pod id -> its EDS health (or UNHEALTHY)."""
    address = admin_file.read_text().strip()
    async with session.get(f"http://{address}/clusters?format=json") as response:
        status = await response.json(content_type=None)
    view = {}
    for cluster in status.get("cluster_statuses", []):
        if cluster.get("name") != "gateways":
            continue
        for host in cluster.get("host_statuses", []):
            health = host.get("health_status", {})
            failed = health.get("failed_active_health_check") or health.get("pending_active_hc")
            view[host["hostname"]] = (
                "UNHEALTHY" if failed else health.get("eds_health_status", "HEALTHY")
            )
    return view


def _cli(state: Path, *args: str) -> str:
    result = subprocess.run(
        [*WSFLEET, *args, "--state-dir", str(state)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_killed_replica_and_pod_come_back_and_no_other_client_is_dropped(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    run = state / "run"
    port, admin_port = free_port(), free_port()
    launcher = Launcher(
        [
            *WSFLEET,
            "up",
            *("--port", str(port), "--admin-port", str(admin_port)),
            *("--state-dir", str(state)),
            *("--redis-cluster", "3", "--xds-replicas", "2", "--envoys", "2"),
        ]
    )
    envoy_admins = [run / "envoy.admin", run / "envoy-2.admin"]
    try:
        await wait_for(lambda: _true(launcher.saw("wsfleet is up")), 120, interval_s=0.2)
        facts = read_ready(run / "fleet.json")
        assert facts is not None
        key = read_auth_key(state / "auth.key")
        connects: list[tuple[str, str]] = []  # (user, pod)
        closes: list[tuple[str, int]] = []
        async with unlimited_session() as session:
            clients = [
                Client(
                    str(facts["client_url"]),  # the L4 tier's, in front of both Envoys
                    f"user-{n}",
                    mint_token(key, f"user-{n}", 3600),
                    session=session,
                    transports=("websocket",),
                    backoff=Backoff(base_s=0.2, cap_s=2.0),
                    on_connect=lambda pod, user=f"user-{n}": connects.append((user, pod)),
                    on_close=lambda code, _, user=f"user-{n}": closes.append((user, code)),
                )
                for n in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 120)
            assert len(connects) == CLIENTS and closes == []

            # 1. kill -9 the first control-plane replica: it comes back on its ports
            xds_ready = run / "xds.ready.json"
            before = read_ready(xds_ready)
            assert before is not None
            xds_pid = _pid_of(str(xds_ready))
            killed_at = time.monotonic()
            os.kill(xds_pid, signal.SIGKILL)

            async def xds_back() -> bool:
                facts = read_ready(xds_ready)
                if facts is None or facts["grpc_port"] != before["grpc_port"]:
                    return False
                try:
                    url = f"http://127.0.0.1:{admin_port}/healthz"
                    async with session.get(url) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(xds_back, 30, interval_s=0.1)
            xds_back_s = time.monotonic() - killed_at
            assert xds_back_s < BACK_WITHIN_S, launcher.tail()
            assert _pid_of(str(xds_ready)) != xds_pid
            # where every Envoy's bootstrap lists it: they can use it again
            assert port_is_listening("127.0.0.1", int(before["grpc_port"]))
            # and the launcher says so once the replica serves again (its report comes after
            # its checks, which may end a moment after /healthz answers)
            await wait_for(lambda: _true(launcher.saw("xds is back")), 10, interval_s=0.1)
            # not one of the 200 clients noticed
            assert closes == [] and len(connects) == CLIENTS
            assert all(client.connected.is_set() for client in clients)

            # 2. a drain through the restarted replica's admin API reaches the pod, and the
            # other replica's EDS takes it out of every Envoy
            drained = "sidecar-1"
            holders = {user for user, pod in connects if pod == drained}
            out = _cli(state, "drain", drained, "--wait", "--budget", "1")
            assert "done" in out and drained in out

            async def drained_everywhere() -> bool:
                views = [await _pool_health(session, admin) for admin in envoy_admins]
                return all(view.get(drained) == "DRAINING" for view in views)

            await wait_for(drained_everywhere, 30, interval_s=0.2)
            await wait_for(lambda: _true(len(closes) >= len(holders)), 30)
            assert {user for user, _ in closes} == holders  # only the drained pod's clients
            _cli(state, "undrain", drained)

            async def all_healthy() -> bool:
                views = [await _pool_health(session, admin) for admin in envoy_admins]
                return all(set(view.values()) == {"HEALTHY"} and len(view) == 2 for view in views)

            await wait_for(all_healthy, 30, interval_s=0.2)

            # 3. kill -9 a sidecar: it comes back with its pod id and port, routable again
            victim_ready = run / "sidecar-2.ready.json"
            pod_before = read_ready(victim_ready)
            assert pod_before is not None
            victim_pid = _pid_of(str(victim_ready))
            killed_at = time.monotonic()
            os.kill(victim_pid, signal.SIGKILL)
            await wait_for(lambda: _true(launcher.saw("sidecar-2 is back")), 30, interval_s=0.1)
            pod_back_s = time.monotonic() - killed_at
            assert pod_back_s < BACK_WITHIN_S, launcher.tail()
            assert read_ready(victim_ready) == pod_before  # same pod id, same ports
            assert await all_healthy()  # every Envoy routes to it again
            # every client is connected again (the killed pod's ones elsewhere)
            await wait_for(lambda: _true(all(c.connected.is_set() for c in clients)), 60)
            for client in clients:
                await client.close()
        assert launcher.process.poll() is None, launcher.tail()  # it never stopped
        assert not launcher.saw("wsfleet: stopping")
        print(f"\nxds back in {xds_back_s:.1f} s, sidecar-2 back in {pod_back_s:.1f} s")
    finally:
        children = psutil.Process(launcher.process.pid).children(recursive=True)
        launcher.process.send_signal(signal.SIGTERM)
        launcher.process.wait(60)
    assert launcher.process.returncode == 0, launcher.tail()
    _, alive = psutil.wait_procs(children, timeout=30)
    assert [child.pid for child in alive if child.status() != "zombie"] == []
    assert not port_is_listening("127.0.0.1", port)


async def _true(value: bool) -> bool:
    return value


FAST = RestartSettings(initial_backoff_s=0.05, max_backoff_s=0.2, crash_loop_restarts=3)
SLEEPER = [
    sys.executable,
    "-c",
    "import sys, time; print('up', sys.argv[1:], flush=True); time.sleep(60)",
]
QUITTER = [sys.executable, "-c", "import sys; print('cannot start', flush=True); sys.exit(7)"]


async def test_the_supervisor_restarts_only_what_dies_unasked(tmp_path: Path) -> None:
    """The launcher's restart rules on tiny children (no fleet): a killed child comes back
    with its command line; a stopped one, one stopped during its backoff and any child once
    the fleet closes stay stopped; a crash loop is reported and still retried."""
    lines: list[tuple[str, str]] = []
    supervisor = Supervisor(tmp_path, lambda name, line: lines.append((name, line)), FAST)
    killed = await supervisor.start("killed", [*SLEEPER, "--port", "0"])
    stopped = await supervisor.start("stopped", SLEEPER)
    looping = await supervisor.start("looping", QUITTER)
    first = killed.pid
    await wait_for(lambda: _true(("killed", "up ['--port', '0']") in lines), 30)
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: _true(killed.restarts == 1 and killed.running), 30)
    assert killed.pid != first
    # the same command line again
    await wait_for(lambda: _true(lines.count(("killed", "up ['--port', '0']")) == 2), 30)
    await wait_for(lambda: _true(any("killed is back" in line for _, line in lines)), 30)

    assert await stopped.stop(5.0) != 0
    assert stopped.restarts == 0 and not stopped.running

    def reported(text: str) -> bool:
        return any(name == "launcher" and text in line for name, line in lines)

    await wait_for(lambda: _true(reported("looping is crash-looping: 3 restarts in 60 s")), 30)
    assert reported("    > looping    | cannot start")
    restarts = looping.restarts
    await wait_for(lambda: _true(looping.restarts > restarts), 30)  # never given up
    await looping.stop(5.0)  # also when it is waiting for its next try
    settled = looping.restarts
    assert killed.watched and not stopped.watched
    await wait_for(lambda: _true(not looping.watched), 10)
    supervisor.closing = True  # the fleet stops: a child that dies now stays down
    os.kill(killed.pid, signal.SIGKILL)
    await wait_for(lambda: _true(not killed.watched), 10)  # its watch ended, no restart
    assert (killed.running, stopped.running, looping.running) == (False, False, False)
    assert (killed.restarts, looping.restarts) == (1, settled)
    await supervisor.stop_all(5.0)
