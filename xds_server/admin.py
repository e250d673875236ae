"""The control plane's HTTP admin: health, metrics and debug views."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from xds_server import envoy_types, type_urls
from xds_server.ledger import Ledger
from xds_server.metrics import XdsMetrics
from xds_server.publisher import SnapshotPublisher


def build_admin_app(
    ledger: Ledger, metrics: XdsMetrics, publisher: SnapshotPublisher
) -> web.Application:
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def nodes(_: web.Request) -> web.Response:
        return web.json_response({"nodes": ledger.to_json()})

    async def config(_: web.Request) -> web.Response:
        snapshot = publisher.snapshot
        if snapshot is None:
            return web.json_response({"error": "no snapshot built yet"}, status=503)
        view: dict[str, Any] = {}
        for url, typed in snapshot.types.items():
            view[type_urls.SHORT_NAMES[url]] = {
                "version": typed.version,
                "resources": {
                    name: {
                        "version": resource.version,
                        "config": envoy_types.decode(url, resource.body),
                    }
                    for name, resource in typed.resources.items()
                },
            }
        return web.json_response(view)

    async def policy(_: web.Request) -> web.Response:
        return web.json_response(publisher.policy.model_dump(mode="json"))

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/debug/nodes", nodes)
    app.router.add_get("/debug/config", config)
    app.router.add_get("/debug/policy", policy)
    return app
