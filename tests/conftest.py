"""Shared fixtures: a real Redis on a free port; real local fleets."""

from __future__ import annotations

import asyncio
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
from wsfleet_tools.launcher.ports import free_port
from wsfleet_tools.launcher.redis_cluster import cluster_url, start_redis_cluster

T = TypeVar("T")


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
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="redis-cluster", daemon=True)
    thread.start()
    supervisor = Supervisor(directory / "logs")

    def run(coroutine: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=120)

    try:
        nodes = run(start_redis_cluster(supervisor, 3, directory))
        yield cluster_url(nodes)
    finally:
        run(supervisor.stop_all(10.0))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


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
