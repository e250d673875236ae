"""The control plane's HTTP admin: health, metrics and debug views."""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wsfleet.admin_auth import require_token
from wsfleet.registry import Registry
from xds_server import envoy_types, type_urls
from xds_server.fleet_admin import FleetAdmin, registry_errors
from xds_server.fleet_events import add_fleet_page
from xds_server.ledger import Ledger
from xds_server.metrics import FleetGauges, FleetLease, Readiness, XdsMetrics
from xds_server.publisher import SnapshotPublisher
from xds_server.snapshot import DEFAULT_GROUP, Resource


def _redacted(type_url: str, resource: Resource) -> dict[str, Any]:
    """A resource as JSON; secrets show only what identifies them, never key material."""
    if type_url == type_urls.SECRET:
        return {"name": resource.name, "tls_certificate": "<redacted>"}
    return envoy_types.decode(type_url, resource.body)


def build_admin_app(
    ledger: Ledger,
    metrics: XdsMetrics,
    publisher: SnapshotPublisher,
    fleet: FleetAdmin,
    registry: Registry,
    token: str | None,
    listener_port_override: int | None = None,
    fleet_lease: FleetLease | None = None,
) -> web.Application:
    """Open: /healthz (liveness), /readyz (a snapshot built and the registry answering),
    /metrics (so each costs no registry read of its own: see
    :class:`~xds_server.metrics.FleetGauges`). Behind the admin token: /debug/* and the
    fleet API."""
    app = web.Application(middlewares=[registry_errors])
    fleet.add_routes(app)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    fleet_gauges = FleetGauges(
        metrics, registry.list_pods, hold_lease=fleet_lease.hold if fleet_lease else None
    )
    readiness = Readiness(lambda: publisher.snapshot is not None, registry.ping)

    async def readyz(_: web.Request) -> web.Response:
        ready, reason = await readiness.check()
        return web.json_response({"ready": ready, "reason": reason}, status=200 if ready else 503)

    async def metrics_view(_: web.Request) -> web.Response:
        await fleet_gauges.refresh()  # reads the registry at most every few seconds
        metrics.drains_in_progress.set(fleet.drains_in_progress)
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def nodes(_: web.Request) -> web.Response:
        return web.json_response({"nodes": ledger.to_json()})

    async def config(request: web.Request) -> web.Response:
        group = request.query.get("group", DEFAULT_GROUP)
        snapshot = publisher.snapshot_of(group)
        if snapshot is None:
            return web.json_response({"error": f"no snapshot for group {group!r}"}, status=404)
        view: dict[str, Any] = {}
        for url, typed in snapshot.types.items():
            view[type_urls.SHORT_NAMES[url]] = {
                "version": typed.version,
                "resources": {
                    name: {"version": resource.version, "config": _redacted(url, resource)}
                    for name, resource in typed.resources.items()
                },
            }
        return web.json_response(view)

    async def policy(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "policy": publisher.policy.model_dump(mode="json"),
                "listener_port_override": listener_port_override,
            }
        )

    async def membership(_: web.Request) -> web.Response:
        return web.json_response(
            {
                pool: [dataclasses.asdict(endpoint) for endpoint in endpoints]
                for pool, endpoints in publisher.membership.items()
            }
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/debug/nodes", require_token(token, nodes))
    app.router.add_get("/debug/config", require_token(token, config))
    app.router.add_get("/debug/policy", require_token(token, policy))
    app.router.add_get("/debug/membership", require_token(token, membership))
    add_fleet_page(  # GET /, /fleet/*
        app, registry, ledger, publisher, fleet, token, envoy_drains=fleet.edge_drain_views
    )
    return app
