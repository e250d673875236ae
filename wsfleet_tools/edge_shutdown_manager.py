"""The aiohttp shell of ``wsfleet edge-shutdown-manager`` (:mod:`wsfleet_tools.edge_shutdown`,
whose :class:`~wsfleet_tools.edge_shutdown.ShutdownCore` makes every decision): the
loopback port the ``preStop`` hooks call, and the calls to the control plane."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from wsfleet.cancelling import cancel_and_wait
from wsfleet_tools.edge_shutdown import (
    LISTEN_HOST,
    SHUTDOWN_PATH,
    Asked,
    DrainTimes,
    EdgeShutdownSettings,
    ShutdownCore,
    Step,
    asked_from_status,
)

log = structlog.get_logger("edge_shutdown")


class ShutdownManager:
    """The aiohttp shell: one drain per process, however many callers wait on it."""

    def __init__(
        self,
        settings: EdgeShutdownSettings,
        token: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._token = token
        self._clock = clock
        self._drain: asyncio.Task[str] | None = None
        self._times = DrainTimes(
            settings.edge_drain_budget_s, settings.edge_delist_s, settings.edge_drain_margin_s
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SHUTDOWN_PATH, self._shutdown_ready)
        app.router.add_get("/healthz", self._healthz)
        app.on_cleanup.append(self._cancel)
        return app

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _shutdown_ready(self, _request: web.Request) -> web.Response:
        if self._drain is None:  # the first call (either preStop hook) starts the one drain
            self._drain = asyncio.create_task(self._run_drain())
        outcome = await asyncio.shield(self._drain)
        return web.json_response({"node": self._settings.envoy_node, "outcome": outcome})

    async def _cancel(self, _app: web.Application) -> None:
        if self._drain is not None and not self._drain.done():
            await cancel_and_wait(self._drain)

    async def _run_drain(self) -> str:
        node = self._settings.envoy_node
        core = ShutdownCore(self._times, self._clock(), self._settings.edge_drain_poll_s)
        log.info("edge_drain_starting", node=node, deadline_in_s=self._times.longest_s)
        headers = {"Authorization": f"Bearer {self._token}"}
        base = self._settings.control_plane.rstrip("/")
        async with aiohttp.ClientSession(headers=headers) as session:
            while (step := core.decide(self._clock())) is not Step.ANSWER:
                timeout = aiohttp.ClientTimeout(total=core.call_timeout_s(self._clock()))
                if step is Step.ASK:
                    body = {
                        "node": node,
                        "budget_s": self._times.budget_s,
                        "delist_s": self._times.delist_s,
                    }
                    core.asked(await _ask(session, f"{base}/envoys/drain", body, timeout))
                else:
                    core.polled(await _state(session, f"{base}/envoys/drain/{node}", timeout))
                await asyncio.sleep(core.pause_s(self._clock()))
        outcome = core.outcome or "deadline"
        log.info("edge_drain_finished", node=node, outcome=outcome)
        return outcome


async def _ask(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], limit: aiohttp.ClientTimeout
) -> Asked:
    try:
        async with session.post(url, json=body, timeout=limit) as response:
            answer = asked_from_status(response.status)
            if answer is not Asked.ACCEPTED:
                log.warning(
                    "edge_drain_not_accepted", status=response.status, body=await _text(response)
                )
            return answer
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("edge_drain_unreachable", url=url, error=str(exc) or type(exc).__name__)
        return Asked.FAILED


async def _state(
    session: aiohttp.ClientSession, url: str, limit: aiohttp.ClientTimeout
) -> str | None:
    try:
        async with session.get(url, timeout=limit) as response:
            if response.status != 200:
                return None
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    state = answer.get("state") if isinstance(answer, dict) else None
    return state if isinstance(state, str) else None


async def _text(response: aiohttp.ClientResponse) -> str:
    return (await response.text())[:200]


async def serve(settings: EdgeShutdownSettings) -> None:
    """Serve ``/shutdown/ready`` until SIGTERM (which the kubelet sends after the hooks)."""
    from wsfleet.admin_token import read_admin_token
    from wsfleet.errors import ConfigError
    from wsfleet.process_shell import listen
    from wsfleet.stop_signals import signal_events

    token = read_admin_token(settings.admin_token_file)
    if token is None:
        raise ConfigError("--admin-token-file is required (the control plane's admin token)")
    stop, _hurry = signal_events()
    manager = ShutdownManager(settings, token)
    async with contextlib.AsyncExitStack() as stack:
        bound = await listen(stack, manager.app(), LISTEN_HOST, settings.shutdown_port)
        log.info("edge_shutdown_manager_ready", node=settings.envoy_node, port=bound)
        await stop.wait()
