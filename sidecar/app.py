"""The sidecar's two HTTP applications: public (clients) and admin (operators)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.admin_api import add_admin_routes
from sidecar.drain import Drainer
from sidecar.gateway import GATEWAY_KEY, Gateway
from sidecar.http_transports import add_http_transport_routes
from sidecar.websocket_transport import handle_websocket
from wsfleet.pod_registration import PodRegistration


def readiness(gateway: Gateway, registration: PodRegistration) -> tuple[bool, str]:
    """Ready = registered, not draining, at least one backend link up, and the pool's hash
    key known (from the control plane)."""
    if gateway.gatekeeper.draining:
        return False, "draining"
    if not registration.registered:
        return False, "not registered"
    if not any(link.is_up for link in gateway.bridge.links):
        return False, "no backend link is up"
    if gateway.gatekeeper.hash_sources is None:
        return False, "the pool's hash key is not known yet (no control plane?)"
    return True, "ready"


def _health_routes(app: web.Application, gateway: Gateway, registration: PodRegistration) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pod_id": gateway.settings.pod_id})

    async def readyz(_: web.Request) -> web.Response:
        ready, why = readiness(gateway, registration)
        return web.json_response(
            {"ready": ready, "reason": why, "pod_id": gateway.settings.pod_id},
            status=200 if ready else 503,
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def build_public_app(gateway: Gateway, registration: PodRegistration) -> web.Application:
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    app.router.add_get("/ws", handle_websocket)
    add_http_transport_routes(app)
    _health_routes(app, gateway, registration)
    return app


def build_admin_app(
    gateway: Gateway, registration: PodRegistration, drainer: Drainer, tokens: tuple[str, ...]
) -> web.Application:
    """``tokens``: the bearer tokens the admin API accepts (the operators' admin token, and
    this pod's own token, derived from the registry key, that the control plane uses)."""
    app = web.Application()
    app[GATEWAY_KEY] = gateway
    add_admin_routes(app, gateway, drainer, tokens)

    _moves_seen = [0]

    async def metrics(_: web.Request) -> web.Response:
        drain = drainer.progress()
        gateway.metrics.set_drain(
            drain["state"], drain.get("started_at", 0), drain.get("budget_s", 0)
        )
        gateway.metrics.backends_up.set(sum(link.is_up for link in gateway.bridge.links))
        gateway.metrics.backend_moves.inc(gateway.bridge.moved_sessions - _moves_seen[0])
        _moves_seen[0] = gateway.bridge.moved_sessions
        body = generate_latest(gateway.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
    _health_routes(app, gateway, registration)
    return app
