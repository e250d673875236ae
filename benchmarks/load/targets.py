"""The targets of ``load``, each started fresh: the local fleet (``wsfleet raw`` and
``wsfleet v1`` rows), Envoy -> bare aiohttp echo (``envoy+bare``) and the bare echo alone
(``bare``); and where their processes run (``--pin``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks import processes
from benchmarks.load.envoy_static import START_TIMEOUT_S, start_envoy, static_envoy_config
from wsfleet.readiness import wait_ready
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

WSFLEET_ROWS = ("wsfleet raw", "wsfleet v1")
PEERS = ("envoy+bare", "bare")
# wsfleet v1 with Envoy's own defaults delivered over xDS (--envoy-variants)
ENVOY_DEFAULT_BUFFERS = """\
listeners:
  - name: public
    port: 8080
    routes: [websocket]
    buffer_limit_bytes: 1048576
    request_ids: true
routes:
  - name: websocket
    path_prefix: /ws
    pool: gateways
pools:
  - name: gateways
    buffer_limit_bytes: 1048576
"""


@dataclass(frozen=True)
class Placement:
    """Where processes run: ``None`` means wherever the scheduler likes (no ``--pin``)."""

    clients: frozenset[int] | None = None
    servers: frozenset[int] | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Placement:
        if not args.pin:
            return cls()
        return cls(frozenset({processes.CLIENT_CORE}), frozenset({processes.SERVER_CORE}))

    @property
    def client_cores(self) -> int:
        """How many cores the clients share (for "how busy were they")."""
        return len(self.clients) if self.clients else os.cpu_count() or 1

    @property
    def server_cores(self) -> int:
        return len(self.servers) if self.servers else os.cpu_count() or 1


@dataclass
class Target:
    name: str
    url: str
    processes: dict[str, psutil.Process]  # role -> process
    key_file: Path  # the handshake's token is signed with it (the bare servers ignore it)
    stop: Callable[[], Awaitable[None]] | None = None
    v1: bool = False  # speak protocol wsfleet.v1
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def pin(self, cores: frozenset[int] | None) -> None:
        if cores:
            for process in self.processes.values():
                processes.pin(process.pid, cores)

    def affinity(self) -> dict[str, list[int]]:
        return {role: processes.affinity(process.pid) for role, process in self.processes.items()}


async def start_bare(run_dir: Path, behind_envoy: bool, cores: frozenset[int] | None) -> Target:
    supervisor = Supervisor(run_dir / "logs")

    async def stop() -> None:
        await supervisor.stop_all(10)

    try:
        with processes.own_affinity(cores):
            ready = run_dir / "bare.ready.json"
            bare = await supervisor.start(
                "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
            )
            bare_port = int((await wait_ready(ready, START_TIMEOUT_S))["port"])
            roles = {"bare": psutil.Process(bare.pid)}
            url = f"ws://127.0.0.1:{bare_port}/ws"
            if behind_envoy:
                port, admin = free_port(), free_port()
                config = static_envoy_config(port, bare_port, admin)
                roles["envoy"] = await start_envoy(supervisor, config, run_dir)
                url = f"ws://127.0.0.1:{port}/ws"
    except BaseException:
        await stop()
        raise
    # the same handshake request as wsfleet's, token included: like is compared with like
    key_file = ensure_auth_key(run_dir)
    target = Target("envoy+bare" if behind_envoy else "bare", url, roles, key_file, stop=stop)
    target.pin(cores)
    return target


async def start_wsfleet(
    run_dir: Path,
    name: str,
    policy: Path | None,
    concurrency: int,
    v1: bool,
    cores: frozenset[int] | None,
) -> Target:
    options = FleetOptions(
        sidecars=1,
        port=free_port(),
        admin_port=free_port(),
        policy_path=policy,
        state_dir=run_dir / "state",
        envoy_concurrency=concurrency,
        log_level="warning",
        broadcasters=("*",),  # the fan-out scenario's clients /broadcast
    )
    fleet = LocalFleet(options)
    with processes.own_affinity(cores):
        await fleet.start()  # stops what it started if it fails
    roles = {}
    for child in fleet.supervisor.children:
        if child.running:
            role = (
                child.name.split("-")[0]
                if child.name.startswith(("sidecar", "backend"))
                else child.name
            )
            roles[role] = psutil.Process(child.pid)
    target = Target(
        name, fleet.client_url, roles, fleet.state_dir / "auth.key", stop=fleet.stop, v1=v1
    )
    target.pin(cores)
    return target


async def start_target(
    tmp: Path,
    name: str,
    policy: Path | None,
    concurrency: int,
    v1: bool,
    cores: frozenset[int] | None,
    prefix: str = "",
) -> Target:
    """The target called ``name`` (``wsfleet ...``, ``envoy+bare`` or ``bare``), started
    in a directory of its own under ``tmp`` (``prefix`` sets apart another start of it)."""
    run_dir = tmp / (prefix + name.replace("/", "-").replace(" ", "-").replace("+", "-"))
    if name.startswith("wsfleet"):
        return await start_wsfleet(run_dir, name, policy, concurrency, v1, cores)
    return await start_bare(run_dir, name == "envoy+bare", cores)
