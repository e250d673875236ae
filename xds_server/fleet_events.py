"""The live fleet page on the control-plane admin, and the data it shows.

``GET /`` and ``GET /fleet-page/{name}`` serve the page: static files of this package,
public, holding no data. It asks for the admin token (kept in the tab's
``sessionStorage``) and reads ``GET /fleet/events``, Server-Sent Events behind the
token (the page sends it in the ``Authorization`` header through ``fetch``, never in a
URL). ``GET /fleet/summary`` answers the same summary once, as JSON (``wsfleet status``).

Gathering a summary asks every pod for its figures (``GET /stats`` on its admin port,
with its own token): it happens only while someone asks, at most once per
:data:`SUMMARY_INTERVAL_S` however many watch (they share it), with at most
:data:`MAX_CONCURRENT_POD_CALLS` pod calls at once, each bounded by
:data:`POD_STATS_TIMEOUT_S`; at most :data:`MAX_WATCHERS` streams are open at once.
The summary itself is made by the pure :func:`xds_server.fleet_summary.summarize`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from wsfleet.admin_auth import error, require_token
from wsfleet.registry import PodRecord, Registry, RegistryUnavailable
from xds_server import type_urls
from xds_server.fleet_admin import FleetAdmin
from xds_server.fleet_summary import (
    FleetInputs,
    PodSample,
    RedisHealth,
    sample_of,
    summarize,
)
from xds_server.ledger import Ledger
from xds_server.publisher import SnapshotPublisher

SUMMARY_INTERVAL_S = 1.0  # a summary is gathered at most this often, shared by all
MAX_WATCHERS = 16  # event streams open at once; one more is refused with 503
MAX_CONCURRENT_POD_CALLS = 8  # pods asked for their figures at the same time
POD_STATS_TIMEOUT_S = 0.8  # a pod slower than this shows "no answer" this round
REDIS_TIMEOUT_S = 0.8  # reading the pods from Redis; slower is shown as unhealthy

PAGE_DIR = Path(__file__).parent / "fleet_page"
PAGE_FILES = {  # what /fleet-page/{name} serves: these files only
    "app.js": "text/javascript",
    "style.css": "text/css",
}
PAGE_HEADERS = {
    # the page runs its own scripts only, talks to this origin only, and is never framed
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

Gather = Callable[[], Awaitable[FleetInputs]]
PodCall = Callable[[PodRecord], Awaitable[tuple[int, dict[str, Any]]]]
EnvoyDrains = Callable[[], Mapping[str, Mapping[str, Any]]]


class SharedSummary:
    """The latest summary: gathered when asked for and older than ``interval_s``; callers
    that ask while a gathering runs wait for that one (one gathering, however many ask)."""

    def __init__(
        self, gather: Gather, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._gather = gather
        self._interval_s = interval_s
        self._clock = clock
        self._previous: PodSample | None = None
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._running: asyncio.Task[dict[str, Any]] | None = None
        self.gatherings = 0

    async def latest(self) -> dict[str, Any]:
        if self._latest is not None and self._clock() - self._latest[0] < self._interval_s:
            return self._latest[1]
        if self._running is None:
            self._running = asyncio.create_task(self._refresh())
        # shielded: a watcher that leaves does not cancel the others' gathering
        return await asyncio.shield(self._running)

    async def _refresh(self) -> dict[str, Any]:
        started = self._clock()
        try:
            inputs = await self._gather()
            summary = summarize(inputs, self._previous)
            self._previous = sample_of(inputs)
            self._latest = (started, summary)
            self.gatherings += 1
            return summary
        finally:
            self._running = None


class FleetGatherer:
    """Reads one :class:`FleetInputs`: the registry, every pod's ``GET /stats``, the
    ledger, the fleet drains, the policy."""

    def __init__(
        self,
        registry: Registry,
        ledger: Ledger,
        publisher: SnapshotPublisher,
        fleet: FleetAdmin,
        pod_call: PodCall,
        envoy_drains: EnvoyDrains | None = None,
    ) -> None:
        self._registry = registry
        self._ledger = ledger
        self._publisher = publisher
        self._fleet = fleet
        self._pod_call = pod_call
        self._envoy_drains = envoy_drains
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_POD_CALLS)

    async def __call__(self) -> FleetInputs:
        at, now = time.monotonic(), time.time()
        pods, redis = await self._pods()
        answers = await asyncio.gather(*(self._stats_of(pod) for pod in pods))
        stats = {pod.pod_id: answer for pod, answer in zip(pods, answers, strict=True)}
        snapshot = self._publisher.snapshot
        versions = (
            {type_urls.SHORT_NAMES[url]: t.version for url, t in snapshot.types.items()}
            if snapshot is not None
            else {}
        )
        bundle = self._publisher.bundle
        return FleetInputs(
            now=now,
            at=at,
            pods=pods,
            pod_stats={k: v for k, v in stats.items() if isinstance(v, dict)},
            pod_errors={k: v for k, v in stats.items() if isinstance(v, str)},
            drains=self._fleet.drains(),
            nodes=self._ledger.nodes(),
            snapshot_versions=versions,
            policy_json=bundle.policy.model_dump_json(),
            certificates=list(bundle.certificates.values()),
            redis=redis,
            envoy_drains=self._envoy_drains() if self._envoy_drains is not None else {},
        )

    async def _pods(self) -> tuple[Sequence[PodRecord], RedisHealth]:
        started = time.monotonic()
        try:
            pods = await asyncio.wait_for(self._registry.list_pods(), REDIS_TIMEOUT_S)
        except RegistryUnavailable as exc:
            return [], RedisHealth(ok=False, error=str(exc)[:200])
        except TimeoutError:
            return [], RedisHealth(ok=False, error=f"no answer within {REDIS_TIMEOUT_S} s")
        latency_ms = round((time.monotonic() - started) * 1000, 2)
        return pods, RedisHealth(ok=True, latency_ms=latency_ms)

    async def _stats_of(self, pod: PodRecord) -> dict[str, Any] | str:
        """The pod's figures, or why there are none."""
        async with self._slots:
            try:
                status, answer = await asyncio.wait_for(self._pod_call(pod), POD_STATS_TIMEOUT_S)
            except TimeoutError:
                return f"no answer within {POD_STATS_TIMEOUT_S} s"
        if status != 200:
            return str(answer.get("error", f"HTTP {status}"))
        return answer


class FleetEvents:
    """The page, the event stream and the one-shot summary (see the module's docstring)."""

    def __init__(
        self,
        summary: SharedSummary,
        token: str | None,
        interval_s: float = SUMMARY_INTERVAL_S,
        max_watchers: int = MAX_WATCHERS,
    ) -> None:
        self._summary = summary
        self._token = token
        self._interval_s = interval_s
        self._max_watchers = max_watchers
        self._watchers = 0
        self._stopping = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/fleet-page/{name}", self.page_file)
        app.router.add_get("/fleet/summary", require_token(self._token, self.summary))
        app.router.add_get("/fleet/events", require_token(self._token, self.events))
        app.on_shutdown.append(self._stop)

    async def _stop(self, _: web.Application) -> None:
        self._stopping.set()  # open streams end now, not at the server's shutdown timeout

    async def page(self, _: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            PAGE_DIR / "index.html",
            headers={**PAGE_HEADERS, "Content-Type": "text/html; charset=utf-8"},
        )

    async def page_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in PAGE_FILES:
            return error(404, f"no page file {name!r}")
        return web.FileResponse(
            PAGE_DIR / name,
            headers={**PAGE_HEADERS, "Content-Type": f"{PAGE_FILES[name]}; charset=utf-8"},
        )

    async def summary(self, _: web.Request) -> web.Response:
        return web.json_response(await self._summary.latest())

    async def events(self, request: web.Request) -> web.StreamResponse:
        if self._watchers >= self._max_watchers:
            return error(503, f"too many watchers (at most {self._max_watchers} at once)")
        self._watchers += 1
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the watcher left
                while not self._stopping.is_set():
                    data = json.dumps(await self._summary.latest(), separators=(",", ":"))
                    await response.write(f"event: summary\ndata: {data}\n\n".encode())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._interval_s)
            return response
        finally:
            self._watchers -= 1


def add_fleet_page(
    app: web.Application,
    registry: Registry,
    ledger: Ledger,
    publisher: SnapshotPublisher,
    fleet: FleetAdmin,
    token: str | None,
    envoy_drains: EnvoyDrains | None = None,
) -> FleetEvents:
    """Serve the fleet page and its data on the control plane's admin app."""

    async def pod_stats(pod: PodRecord) -> tuple[int, dict[str, Any]]:
        # the fleet admin's pod client: the pod's own token, the shared HTTP session
        return await fleet._pod_call(pod, "GET", "/stats")

    gatherer = FleetGatherer(registry, ledger, publisher, fleet, pod_stats, envoy_drains)
    events = FleetEvents(SharedSummary(gatherer, SUMMARY_INTERVAL_S), token)
    events.add_routes(app)
    return events
