"""Shared fixtures: a real Redis on a free port; real local fleets."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import pytest_asyncio

from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.embedded_redis import redis_argv
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import SHARE_VARIABLE, free_port
from wsfleet_tools.launcher.redis_cluster import cluster_url, start_redis_cluster

T = TypeVar("T")

# Test workers (pytest-xdist) pick ports apart: worker i takes only ports p % m == i (and
# every process it starts inherits that). m is the number of workers rounded up to a
# divisor of 10,000, so a Redis Cluster node's bus (its port + 10,000) stays in its
# worker's share: 3 workers share ports as 4 would.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw"):
    _SHARES = next(
        m for m in range(int(os.environ["PYTEST_XDIST_WORKER_COUNT"]), 10_001) if 10_000 % m == 0
    )
    os.environ[SHARE_VARIABLE] = f"{int(_WORKER[2:])}/{_SHARES}"


class RedisProcess:
    """A private redis-server the test can stop and restart on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="wsfleet-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            redis_argv(self.port, self.directory),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.exceptions.ConnectionError:
                import time

                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(5)
        self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real 3-master Redis Cluster shared by a module's tests (it takes seconds to
    form): its ``redis+cluster://`` URL. Tests keep apart by namespace. Its supervisor
    lives on an event loop of its own, in a thread, so that any test's loop can use it."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    runner = LoopThread("redis-cluster")
    supervisor = Supervisor(directory / "logs")
    try:
        nodes = runner.run(start_redis_cluster(supervisor, 3, directory))
        yield cluster_url(nodes)
    finally:
        runner.run(supervisor.stop_all(10.0))
        runner.close()


class LoopThread:
    """An event loop of its own, in a thread: what a module-scoped fixture starts on it
    (a Redis Cluster, a fleet) outlives every test's loop, and any test can use it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[object, object, T], timeout_s: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def shared_fleet(
    tmp_path_factory: pytest.TempPathFactory, name: str, **overrides: object
) -> Iterator[LocalFleet]:
    """A fleet shared by a module's tests that only talk to it (its URLs, tokens, keys):
    it runs on a :class:`LoopThread`; tests that stop or kill its parts start their own."""
    runner = LoopThread(name)
    fleet = LocalFleet(fleet_options(tmp_path_factory.mktemp(name), **overrides))
    try:
        runner.run(fleet.start())
        yield fleet
    finally:
        runner.run(fleet.stop())
        runner.close()


def fleet_options(state_dir: Path, **overrides: object) -> FleetOptions:
    """Options for a test fleet: free ports, a private state dir, fast registry TTLs."""
    values: dict[str, object] = {
        "port": free_port(),
        "admin_port": free_port(),
        "state_dir": state_dir,
        "sidecars": 2,
        "api_instances": 0,  # tests of the server API ask for it
        "log_level": "warning",
    }
    values.update(overrides)
    return FleetOptions(**values)  # type: ignore[arg-type]


@pytest_asyncio.fixture
async def fleet_factory(tmp_path: Path) -> AsyncIterator[object]:
    """Start fleets with ``await fleet_factory(**options)``; all are stopped at the end."""
    started: list[LocalFleet] = []

    async def start(**overrides: object) -> LocalFleet:
        fleet = LocalFleet(fleet_options(tmp_path / f"fleet-{len(started)}", **overrides))
        started.append(fleet)
        await fleet.start()
        return fleet

    yield start
    await asyncio.gather(*(fleet.stop() for fleet in started))


@pytest.fixture(scope="module")
def one_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """A default fleet with one gateway, shared by a module's tests that only talk to it
    (each with users of its own)."""
    yield from shared_fleet(tmp_path_factory, "one-gateway", sidecars=1)


@pytest.fixture(scope="module")
def two_gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """A default fleet with two gateways, shared like :func:`one_gateway`."""
    yield from shared_fleet(tmp_path_factory, "two-gateways", sidecars=2)
