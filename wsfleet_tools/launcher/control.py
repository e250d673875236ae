"""The launcher's own control API, on a Unix socket in the state dir (``run/launcher.sock``).

Only ``wsfleet up`` serves it; ``wsfleet rollout`` and ``wsfleet stop`` use it, because
starting and stopping pods is the launcher's job (a Kubernetes deployment does the same with
its own controller plus ``wsfleet drain``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from wsfleet.admin_auth import error, json_body
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.rollout import (
    EnvoyRolloutStatus,
    RolloutStatus,
    envoy_rollout_refusal,
    rollout,
    rollout_envoys,
)

SOCKET = "launcher.sock"
STOP_OVERRUN_S = 10.0  # a stopped pod drains over its budget, then gets this long to exit


def socket_path(state_dir: Path) -> Path:
    return state_dir / "run" / SOCKET


class LauncherControl:
    def __init__(self, fleet: LocalFleet) -> None:
        self._fleet = fleet
        self._status = RolloutStatus()
        self._envoy_status = EnvoyRolloutStatus()
        self._task: asyncio.Task[Any] | None = None  # one rollout at a time, of either kind
        self._runner: web.AppRunner | None = None

    async def start(self) -> Path:
        app = web.Application()
        app.router.add_post("/rollout", self._start_rollout)
        app.router.add_get("/rollout", self._rollout_status)
        app.router.add_post("/rollout/envoys", self._start_envoy_rollout)
        app.router.add_get("/rollout/envoys", self._envoy_rollout_status)
        app.router.add_post("/stop", self._stop_pod)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        path = socket_path(self._fleet.state_dir)
        path.unlink(missing_ok=True)
        await web.UnixSite(self._runner, str(path)).start()
        path.chmod(0o600)
        return path

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def _running(self) -> str | None:
        """The rollout in progress, if any: what a new one is refused with."""
        if self._task is None or self._task.done():
            return None
        if self._envoy_status.phase not in ("idle", "done", "failed"):
            return f"an Envoy rollout is running ({self._envoy_status.phase})"
        return f"a rollout is already running ({self._status.phase})"

    async def _start_envoy_rollout(self, request: web.Request) -> web.Response:
        """Roll the L7 Envoys one at a time (``wsfleet rollout --envoys``)."""
        running = self._running()
        if running:
            return error(409, running)
        body = await json_body(request)
        try:
            budget = float(body.get("budget_s", 10))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return error(400, "budget_s is a number of seconds")
        if budget < 0:
            return error(400, "budget_s >= 0")
        refusal = envoy_rollout_refusal(len(self._fleet.info.envoys))
        if refusal:
            return error(409, refusal)
        self._envoy_status = EnvoyRolloutStatus(phase="starting")
        self._task = asyncio.create_task(self._guarded_envoys(budget))
        return web.json_response(self._envoy_status.to_json(), status=202)

    async def _guarded_envoys(self, budget: float) -> EnvoyRolloutStatus:
        try:
            return await rollout_envoys(self._fleet, self._envoy_status, budget)
        except Exception as exc:  # reported to the operator, never lost
            self._envoy_status.phase = "failed"
            self._envoy_status.message = f"{type(exc).__name__}: {exc}"
            return self._envoy_status

    async def _envoy_rollout_status(self, _: web.Request) -> web.Response:
        return web.json_response(self._envoy_status.to_json())

    async def _start_rollout(self, request: web.Request) -> web.Response:
        running = self._running()
        if running:
            return error(409, running)
        body = await json_body(request)
        try:
            budget = float(body.get("budget_s", 10))  # type: ignore[arg-type]
            min_success = float(body.get("min_success", 0.999))  # type: ignore[arg-type]
            count = body.get("sidecars")
            green_args = tuple(str(arg) for arg in body.get("green_args", []))  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            return error(400, "budget_s and min_success are numbers, green_args a list")
        if budget < 0 or not 0 <= min_success <= 1:
            return error(400, "budget_s >= 0 and 0 <= min_success <= 1")
        if count is not None and (not isinstance(count, int) or count < 1):
            return error(400, "sidecars must be a positive integer")
        self._status = RolloutStatus(phase="starting")
        self._task = asyncio.create_task(self._guarded(count, budget, min_success, green_args))
        return web.json_response(self._status.to_json(), status=202)

    async def _guarded(
        self, count: int | None, budget: float, min_success: float, green_args: tuple[str, ...]
    ) -> RolloutStatus:
        try:
            return await rollout(
                self._fleet, self._status, count, budget, min_success, green_args=green_args
            )
        except Exception as exc:  # reported to the operator, never lost
            self._status.phase = "failed"
            self._status.message = f"{type(exc).__name__}: {exc}"
            return self._status

    async def _stop_pod(self, request: web.Request) -> web.Response:
        """Stop one sidecar (SIGTERM: it drains first, unless it is drained already)."""
        body = await json_body(request)
        pod_id = body.get("pod")
        if not isinstance(pod_id, str) or not pod_id:
            return error(400, 'name the pod to stop: {"pod": "ID"}')
        if pod_id not in self._fleet.info.sidecars:
            known = ", ".join(sorted(self._fleet.info.sidecars)) or "none"
            return error(404, f"this fleet runs no pod {pod_id!r} (it runs: {known})")
        running = self._running()
        if running:
            return error(409, f"{running}: stop pods after it")
        timeout_s = self._fleet.options.drain_budget_s + STOP_OVERRUN_S
        code = await self._fleet.stop_sidecar(pod_id, timeout_s=timeout_s)
        return web.json_response({"pod_id": pod_id, "exit_code": code})

    async def _rollout_status(self, _: web.Request) -> web.Response:
        return web.json_response(self._status.to_json())
