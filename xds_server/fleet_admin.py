"""The fleet admin API on the control plane: drain, disconnect, placement lookups.

JSON over HTTP, every endpoint behind the admin bearer token (see
docs/openapi/control-plane.yaml). The control plane finds pods and
connections in the registry and tells the owning pods through their local
admin API (``POST /drain``, ``POST /disconnect`` on each sidecar's admin port).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from wsfleet.admin_auth import error, json_body, require_token
from wsfleet.registry import (
    ConnectionRecord,
    PodRecord,
    PodState,
    Registry,
    RegistryUnavailable,
)
from wsfleet.registry.signing import PodSigner
from xds_server.drain_records import DrainRecord
from xds_server.edge_drains import EdgeDrains
from xds_server.edge_routes import EdgeRoutes
from xds_server.ledger import Ledger
from xds_server.pod_history import PodHistory
from xds_server.snapshot_cache import SnapshotCache

log = structlog.get_logger()

MAX_BUDGET_S = 24 * 3600
GONE = "gone"  # the state /pods reports for a pod that left the registry lately
POD_TIMEOUT = aiohttp.ClientTimeout(total=5)


def _connection_json(record: ConnectionRecord) -> dict[str, Any]:
    return {
        "connection_id": record.connection_id,
        "user_id": record.user_id,
        "pod_id": record.shard,
        "backend_routing_key": record.backend_routing_key,
        "transport": record.transport,
        "connected_at": record.connected_at,
        "last_ping": record.last_ping,
    }


class FleetAdmin:
    """Handlers of the fleet admin API; one per control plane."""

    def __init__(
        self,
        registry: Registry,
        token: str | None,
        history: PodHistory,
        clock: Callable[[], float],
        signer: PodSigner | None = None,
    ) -> None:
        """``clock``: the wall clock (``time.time``; a fake one in tests), read when a drain
        starts and for the pods' heartbeat ages."""
        self._registry = registry
        self._token = token
        self._signer = signer  # pods are called with their own tokens, derived from its key
        self._history = history
        self._clock = clock
        self._drains: dict[str, DrainRecord] = {}
        self._http: aiohttp.ClientSession | None = None
        self._edge_drains: EdgeDrains | None = None

    def _edges(self) -> EdgeDrains:
        """The one attached; else (a FleetAdmin on its own, in tests) one that knows no
        Envoy."""
        if self._edge_drains is None:
            self._edge_drains = EdgeDrains(
                self._registry, Ledger(), EdgeRoutes(), SnapshotCache(), self.call_pod
            )
        return self._edge_drains

    def attach(self, edge_drains: EdgeDrains) -> None:
        """Serve the Envoy drain API (``/envoys``) beside the pods' (it calls the pods
        through :meth:`call_pod`)."""
        self._edge_drains = edge_drains

    def edge_drain_views(self) -> dict[str, dict[str, Any]]:
        """The Envoy drains in progress, by node (for the fleet page)."""
        return self._edges().drain_views()

    @property
    def drains_in_progress(self) -> int:
        return sum(1 for drain in self._drains.values() if not drain.finished)

    def drains(self) -> list[DrainRecord]:
        """Every drain started here, oldest first (the fleet page shows their progress)."""
        return list(self._drains.values())

    def add_routes(self, app: web.Application) -> None:
        guard = self._token
        app.router.add_post("/drain", require_token(guard, self.start_drain))
        app.router.add_get("/drain/{drain_id}", require_token(guard, self.drain_status))
        app.router.add_post("/undrain", require_token(guard, self.undrain))
        app.router.add_post("/disconnect", require_token(guard, self.disconnect))
        app.router.add_get("/connections", require_token(guard, self.connections_of_user))
        app.router.add_get("/connections/{connection_id}", require_token(guard, self.connection))
        app.router.add_get("/pods", require_token(guard, self.pods))
        self._edges().add_routes(app, guard)
        app.on_cleanup.append(self._close)

    async def _close(self, _: web.Application) -> None:
        if self._http is not None:
            await self._http.close()

    async def call_pod(
        self, pod: PodRecord, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Call a pod's local admin API with that pod's own token."""
        return await self._pod_call(pod, method, path, body)

    async def _pod_call(
        self, pod: PodRecord, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=POD_TIMEOUT)
        if self._signer is None:  # the operators' token never goes to a pod
            return 503, {"error": "pods cannot be called: the control plane has no registry key"}
        url = f"http://{pod.host}:{pod.admin_port}{path}"
        headers = {"Authorization": f"Bearer {self._signer.admin_token(pod.pod_id)}"}
        try:
            async with self._http.request(method, url, json=body, headers=headers) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return 502, {"error": f"pod {pod.pod_id} did not answer: {exc}"}

    # -- drain ---------------------------------------------------------------------

    async def start_drain(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        budget = body.get("budget_s", 30)
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            return error(400, "budget_s must be a number of seconds")
        if not 0 <= budget <= MAX_BUDGET_S:
            return error(400, f"budget_s must be between 0 and {MAX_BUDGET_S}")
        chosen = [key for key in ("pod", "pods", "region") if key in body]
        if len(chosen) != 1:
            return error(400, "name exactly one of: pod (an id), pods (a list of ids), region")
        live = await self._registry.list_pods()
        by_id = {pod.pod_id: pod for pod in live}
        if "region" in body:
            region = body["region"]
            if not isinstance(region, str):
                return error(400, "region must be a string")
            pods = [pod for pod in live if pod.region == region]
            if not pods:
                return error(404, f"no live pod in region {region!r}")
        else:
            wanted = [body["pod"]] if "pod" in body else body["pods"]
            if (
                not isinstance(wanted, list)
                or not wanted
                or not all(isinstance(p, str) for p in wanted)
            ):
                return error(400, "pod must be a string, pods a non-empty list of strings")
            unknown = [pod_id for pod_id in wanted if pod_id not in by_id]
            if unknown:
                return error(404, f"unknown pod(s): {', '.join(map(str, unknown))}")
            pods = [by_id[str(pod_id)] for pod_id in wanted]
        drain = DrainRecord(secrets.token_hex(8), pods, float(budget), started_at=self._clock())
        results = await asyncio.gather(
            *(self._pod_call(pod, "POST", "/drain", {"budget_s": budget}) for pod in pods)
        )
        for pod, (status, answer) in zip(pods, results, strict=True):
            drain.progress[pod.pod_id] = answer if status < 300 else {"state": "error", **answer}
        self._drains[drain.drain_id] = drain
        log.info("fleet_drain_started", drain_id=drain.drain_id, pods=[p.pod_id for p in pods])
        return web.json_response(await self._drain_view(drain, refresh=False), status=202)

    async def drain_status(self, request: web.Request) -> web.Response:
        drain = self._drains.get(request.match_info["drain_id"])
        if drain is None:
            return error(404, f"unknown drain id {request.match_info['drain_id']!r}")
        return web.json_response(await self._drain_view(drain, refresh=True))

    async def _drain_view(self, drain: DrainRecord, refresh: bool) -> dict[str, Any]:
        if refresh and not drain.finished:
            live = {pod.pod_id for pod in await self._registry.list_pods()}
            for pod in drain.pods:
                last = drain.progress.get(pod.pod_id, {})
                if last.get("state") == "drained":
                    continue
                status, answer = await self._pod_call(pod, "GET", "/drain")
                if status == 200:
                    drain.progress[pod.pod_id] = answer
                elif pod.pod_id not in live:  # the pod finished and went away
                    drain.progress[pod.pod_id] = {**last, "state": "drained", "left": 0, "eta_s": 0}
        return drain.to_json()

    async def undrain(self, request: web.Request) -> web.Response:
        """Put a draining or drained pod back into service (its drain, if any, stops)."""
        body = await json_body(request)
        pod_id = body.get("pod")
        if not isinstance(pod_id, str) or not pod_id:
            return error(400, 'name the pod to undrain: {"pod": "ID"}')
        pod = await self._registry.get_pod(pod_id)
        if pod is None:
            gone = any(item.endpoint.pod_id == pod_id for item in self._history.gone())
            return error(404, f"pod {pod_id!r} is gone" if gone else f"unknown pod {pod_id!r}")
        if pod.state is PodState.SERVING:
            return error(409, f"pod {pod_id!r} is serving already")
        status, answer = await self._pod_call(pod, "POST", "/drain/cancel")
        if status != 200:
            return error(502, str(answer.get("error", f"pod {pod_id} answered HTTP {status}")))
        log.info("fleet_undrain", pod_id=pod_id, previous_state=pod.state.value)
        return web.json_response({"pod_id": pod_id, "previous_state": pod.state.value, **answer})

    # -- disconnect ------------------------------------------------------------------

    async def disconnect(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        code, reason = body.get("code", 1000), body.get("reason", "disconnected by operator")
        if ("connection_id" in body) == ("user_id" in body):
            return error(400, "give exactly one of connection_id or user_id")
        if "connection_id" in body:
            record = await self._registry.get_connection(str(body["connection_id"]))
            records = [record] if record is not None else []
            what = f"connection {body['connection_id']!r}"
        else:
            records = await self._registry.connections_of_user(str(body["user_id"]))
            what = f"user {body['user_id']!r}"
        if not records:
            return error(404, f"no live connection for {what}")
        pods = {pod.pod_id: pod for pod in await self._registry.list_pods()}
        by_pod: dict[str, list[str]] = {}
        for record in records:
            by_pod.setdefault(record.shard, []).append(record.connection_id)
        closed, failures = 0, {}
        for pod_id, ids in by_pod.items():
            pod = pods.get(pod_id)
            if pod is None:
                failures[pod_id] = "pod is gone"
                continue
            status, answer = await self._pod_call(
                pod, "POST", "/disconnect", {"connection_ids": ids, "code": code, "reason": reason}
            )
            if status == 400:
                return web.json_response(answer, status=400)  # the pod judged code/reason
            if status != 200:
                failures[pod_id] = str(answer.get("error", status))
                continue
            closed += int(answer.get("closed", 0))
        return web.json_response({"closed": closed, "pods": sorted(by_pod), "failures": failures})

    # -- lookups -----------------------------------------------------------------------

    async def connections_of_user(self, request: web.Request) -> web.Response:
        user = request.query.get("user_id")
        if not user:
            return error(400, "give ?user_id=")
        records = await self._registry.connections_of_user(user)
        return web.json_response({"connections": [_connection_json(r) for r in records]})

    async def connection(self, request: web.Request) -> web.Response:
        record = await self._registry.get_connection(request.match_info["connection_id"])
        if record is None:
            return error(404, f"no live connection {request.match_info['connection_id']!r}")
        return web.json_response(_connection_json(record))

    async def pods(self, _: web.Request) -> web.Response:
        """Live pods (serving, draining, drained), then the ones gone lately."""
        now = self._clock()
        live = [
            {
                "pod_id": pod.pod_id,
                "pool": pod.pool,
                "state": pod.state.value,
                "address": f"{pod.host}:{pod.port}",
                "admin": f"{pod.host}:{pod.admin_port}",
                "region": pod.region,
                "zone": pod.zone,
                "connections": pod.conns,
                "connections_by_transport": pod.connections_by_transport(),
                "heartbeat_age_s": round(now - pod.heartbeat_at, 3),
                "started_at": pod.started_at,
            }
            for pod in await self._registry.list_pods()
        ]
        seen = {pod["pod_id"] for pod in live}
        gone = [
            {
                "pod_id": item.endpoint.pod_id,
                "pool": item.pool,
                "state": GONE,
                "address": f"{item.endpoint.host}:{item.endpoint.port}",
                "region": item.endpoint.region,
                "zone": item.endpoint.zone,
                "connections": 0,
                "gone_s_ago": round(now - item.gone_at, 3),
            }
            for item in self._history.gone()
            if item.endpoint.pod_id not in seen
        ]
        return web.json_response({"pods": live + gone})


@web.middleware
async def registry_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """A registry outage is a 503 with a message, not a stack trace."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except RegistryUnavailable as exc:
        return error(503, f"registry unavailable: {exc}")
