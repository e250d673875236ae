"""A process that cannot start closes what it opened, in reverse, and opens nothing after.

The sidecar and the control plane run in this process against a real Redis, with a
failure planted at each step that opens something: the steps before it are closed in
reverse (recorded), nothing after it is opened, and nothing is left behind (no listening
port, no task, no pod record). Then a real failure (a port in use): the control plane in
this process, the sidecar as a user runs it (one clear line, a non-zero exit)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import sidecar.main as sidecar_main
import xds_server.main as xds_main
from tests.conftest import RedisProcess
from tests.helpers import wait_for
from wsfleet.errors import StartupError
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.settings import SidecarSettings, XdsSettings
from wsfleet.tokens import ensure_auth_key
from wsfleet_tools.launcher.ports import free_port, port_is_listening

pytestmark = pytest.mark.integration

SIDECAR_STEPS = (
    "open_stores",
    "start_replay_writer",
    "start_channels",
    "start_backends",
    "listen_both",
    "start_tasks",
)
XDS_STEPS = ("open_registry", "listen", "start_grpc", "start_tasks")


def _recorded(name: str, real: Callable[..., Any], fail: str | None, events: list[str]) -> Any:
    """``real`` (a step taking the stack first), recording ``opened`` when it has opened
    and ``closed`` when the stack starts closing what it opened; ``fail``: it fails
    instead of opening."""

    def opened(stack: contextlib.AsyncExitStack) -> None:
        events.append(f"opened {name}")
        stack.callback(events.append, f"closed {name}")

    def check(*args: Any) -> None:
        if name == fail:
            for loop in args[0] if name == "start_tasks" else ():
                loop.close()  # never started
            raise StartupError(f"planted: {name} failed")

    if inspect.iscoroutinefunction(real):

        async def step(stack: contextlib.AsyncExitStack, *args: Any, **kwargs: Any) -> Any:
            check(*args)
            result = await real(stack, *args, **kwargs)
            opened(stack)
            return result

        return step

    def sync_step(stack: contextlib.AsyncExitStack, *args: Any, **kwargs: Any) -> Any:
        check(*args)
        result = real(stack, *args, **kwargs)
        opened(stack)
        return result

    return sync_step


def _record_steps(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, steps: tuple[str, ...], fail: str | None
) -> list[str]:
    events: list[str] = []
    for name in steps:
        monkeypatch.setattr(module, name, _recorded(name, getattr(module, name), fail, events))
    return events


def _opened_then_closed(steps: tuple[str, ...]) -> list[str]:
    return [f"opened {s}" for s in steps] + [f"closed {s}" for s in reversed(steps)]


def _nothing_left(ports: tuple[int, ...]) -> None:
    """No port listening, no task but this one (the hub's, the replay writer's, the
    backend links', the loops')."""
    assert [port for port in ports if port_is_listening("127.0.0.1", port)] == []
    assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.fixture
def sidecar_settings(redis_server: RedisProcess, tmp_path: Path) -> Iterator[SidecarSettings]:
    yield SidecarSettings(
        redis_url=redis_server.url,
        namespace="startup",
        pod_id="sidecar-1",
        backends=(),
        auth_key_file=ensure_auth_key(tmp_path),
        port=free_port(),
        admin_port=free_port(),
        drain_budget_s=0.5,
    )


@pytest.fixture
def xds_settings(redis_server: RedisProcess) -> Iterator[XdsSettings]:
    yield XdsSettings(
        redis_url=redis_server.url,
        namespace="startup",
        grpc_port=free_port(),
        admin_port=free_port(),
    )


async def _startup_error(serving: Awaitable[None]) -> str:
    """The one line ``serving`` failed with (a :class:`StartupError`)."""
    try:
        await serving
    except StartupError as exc:
        return str(exc)
    raise AssertionError("it started")


async def _pods(settings: SidecarSettings) -> list[str]:
    registry = RedisRegistry(settings.redis_url, settings.namespace)
    try:
        return [pod.pod_id for pod in await registry.list_pods()]
    finally:
        await registry.close()


@pytest.mark.parametrize("failing", SIDECAR_STEPS)
async def test_a_sidecar_failing_at_a_step_closes_what_it_opened(
    monkeypatch: pytest.MonkeyPatch, sidecar_settings: SidecarSettings, failing: str
) -> None:
    monkeypatch.setattr(sidecar_main, "BACKEND_WAIT_S", 0.1)  # it has no backend
    events = _record_steps(monkeypatch, sidecar_main, SIDECAR_STEPS, failing)
    failed = await _startup_error(sidecar_main.serve(sidecar_settings, asyncio.Event()))
    assert failed == f"planted: {failing} failed"
    assert events == _opened_then_closed(SIDECAR_STEPS[: SIDECAR_STEPS.index(failing)])
    _nothing_left((sidecar_settings.port, sidecar_settings.admin_port))
    assert await _pods(sidecar_settings) == []


async def test_a_stopped_sidecar_closes_everything_in_reverse(
    monkeypatch: pytest.MonkeyPatch, sidecar_settings: SidecarSettings
) -> None:
    monkeypatch.setattr(sidecar_main, "BACKEND_WAIT_S", 0.1)
    events = _record_steps(monkeypatch, sidecar_main, SIDECAR_STEPS, None)
    stop = asyncio.Event()
    serving = asyncio.create_task(sidecar_main.serve(sidecar_settings, stop))

    async def registered() -> bool:
        return await _pods(sidecar_settings) == ["sidecar-1"]

    await wait_for(registered, 20)
    stop.set()
    await asyncio.wait_for(serving, 20)
    assert events == _opened_then_closed(SIDECAR_STEPS)
    _nothing_left((sidecar_settings.port, sidecar_settings.admin_port))
    assert await _pods(sidecar_settings) == []


@pytest.mark.parametrize("failing", XDS_STEPS)
async def test_a_control_plane_failing_at_a_step_closes_what_it_opened(
    monkeypatch: pytest.MonkeyPatch, xds_settings: XdsSettings, failing: str
) -> None:
    events = _record_steps(monkeypatch, xds_main, XDS_STEPS, failing)
    failed = await _startup_error(xds_main.serve(xds_settings, asyncio.Event()))
    assert failed == f"planted: {failing} failed"
    assert events == _opened_then_closed(XDS_STEPS[: XDS_STEPS.index(failing)])
    _nothing_left((xds_settings.grpc_port, xds_settings.admin_port))


async def test_a_control_plane_whose_admin_port_is_taken_says_so_and_closes_the_registry(
    xds_settings: XdsSettings,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", xds_settings.admin_port))
        holder.listen()
        failed = await _startup_error(xds_main.serve(xds_settings, asyncio.Event()))
    assert failed.startswith(f"cannot listen for admin on 127.0.0.1:{xds_settings.admin_port}: ")
    _nothing_left((xds_settings.grpc_port,))


def test_a_sidecar_whose_admin_port_is_taken_exits_with_one_line_and_frees_its_port(
    redis_server: RedisProcess, tmp_path: Path
) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        argv = [
            *(sys.executable, "-m", "wsfleet_tools", "sidecar"),
            *("--redis-url", redis_server.url, "--auth-key-file", str(ensure_auth_key(tmp_path))),
            *("--port", str(port), "--admin-port", str(taken), "--pod-id", "sidecar-9"),
            *("--backend", f"127.0.0.1:{free_port()}"),  # none there: serves after 5 s
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"wsfleet: error: cannot listen on 127.0.0.1:{taken}: "), done.stderr
    assert not port_is_listening("127.0.0.1", port)
