"""The sidecar's local admin API: drain this pod or an Envoy's connections, disconnect.

Both need this pod's own admin token, derived from its pod key (the control plane derives
it from the fleet's root key; :mod:`wsfleet.registry.signing`), or the operators' token if
``--admin-token-file`` gives one (the local fleet and the manifests do not: a pod learns
no credential that works on another). See docs/openapi/sidecar-admin.yaml.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sidecar.core.close_codes import OPERATOR_CLOSE_CODES, CloseCode
from sidecar.drain import Drainer
from sidecar.edge_drain import MAX_EDGE_CHARS, EdgeDrainer
from sidecar.gateway import Gateway
from wsfleet.admin_auth import error, json_body, require_token

MAX_DRAIN_BUDGET_S = 24 * 3600


def valid_close_code(code: object) -> int | None:
    """Close codes an operator may send: wsfleet's own, or 4000-4999 (application)."""
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    return code if code in OPERATOR_CLOSE_CODES or 4000 <= code <= 4999 else None


def add_admin_routes(
    app: web.Application, gateway: Gateway, drainer: Drainer, tokens: tuple[str, ...]
) -> None:
    async def start_drain(request: web.Request) -> web.Response:
        body = await json_body(request)
        budget = body.get("budget_s", gateway.settings.drain_budget_s)
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            return error(400, "budget_s must be a number of seconds")
        if not 0 <= budget <= MAX_DRAIN_BUDGET_S:
            return error(400, f"budget_s must be between 0 and {MAX_DRAIN_BUDGET_S}")
        started = drainer.start(float(budget))
        return web.json_response(
            {"pod_id": gateway.settings.pod_id, "started": started, **drainer.progress()},
            status=202 if started else 200,
        )

    async def cancel_drain(_: web.Request) -> web.Response:
        cancelled = await drainer.cancel()
        return web.json_response({"pod_id": gateway.settings.pod_id, "cancelled": cancelled})

    async def drain_status(_: web.Request) -> web.Response:
        return web.json_response({"pod_id": gateway.settings.pod_id, **drainer.progress()})

    async def disconnect(request: web.Request) -> web.Response:
        body = await json_body(request)
        code = valid_close_code(body.get("code", CloseCode.NORMAL))
        if code is None:
            allowed = ", ".join(str(int(c)) for c in sorted(OPERATOR_CLOSE_CODES))
            return error(400, f"code must be {allowed} or 4000-4999")
        reason = body.get("reason", "disconnected by operator")
        if not isinstance(reason, str) or len(reason.encode()) > 123:
            return error(400, "reason must be a string of at most 123 bytes")
        ids = body.get("connection_ids")
        user = body.get("user_id")
        if (ids is None) == (user is None):
            return error(400, "give exactly one of connection_ids (a list) or user_id")
        if ids is not None and (
            not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
        ):
            return error(400, "connection_ids must be a list of strings")
        if user is not None and not isinstance(user, str):
            return error(400, "user_id must be a string")
        chosen = [
            connection
            for connection in list(gateway.table.connections.values())
            if (ids is not None and connection.connection_id in ids)
            or (user is not None and connection.user_id == user)
        ]
        for connection in chosen:
            await connection.close(code, reason)
        return web.json_response(
            {
                "pod_id": gateway.settings.pod_id,
                "closed": len(chosen),
                "connection_ids": [c.connection_id for c in chosen],
            }
        )

    edge_drainers: list[EdgeDrainer] = []  # made on first use (the gateway runs by then)

    def edge_drainer() -> EdgeDrainer:
        if not edge_drainers:
            edge_drainers.append(EdgeDrainer(gateway.table, drainer.retry_hint_ms))
        return edge_drainers[0]

    async def start_edge_drain(request: web.Request) -> web.Response:
        body = await json_body(request)
        edge, drain_id = body.get("edge"), body.get("drain_id")
        if not isinstance(edge, str) or not 0 < len(edge) <= MAX_EDGE_CHARS:
            return error(400, f"edge must be an Envoy node id of 1 to {MAX_EDGE_CHARS} characters")
        if not isinstance(drain_id, str) or not 0 < len(drain_id) <= 2 * MAX_EDGE_CHARS:
            return error(400, "drain_id must be a string (the control plane's name of the drain)")
        budget = body.get("budget_s", gateway.settings.drain_budget_s)
        if isinstance(budget, bool) or not isinstance(budget, int | float):
            return error(400, "budget_s must be a number of seconds")
        if not 0 <= budget <= MAX_DRAIN_BUDGET_S:
            return error(400, f"budget_s must be between 0 and {MAX_DRAIN_BUDGET_S}")
        try:
            started = edge_drainer().start(drain_id, edge, float(budget))
        except OverflowError as exc:
            return error(429, str(exc))
        return web.json_response(
            {
                "pod_id": gateway.settings.pod_id,
                "started": started,
                **edge_drainer().progress(edge),
            },
            status=202 if started else 200,
        )

    async def edge_drain_status(request: web.Request) -> web.Response:
        edge = request.match_info["edge"]
        if len(edge) > MAX_EDGE_CHARS:
            return error(400, f"an Envoy node id has at most {MAX_EDGE_CHARS} characters")
        return web.json_response(
            {"pod_id": gateway.settings.pod_id, **edge_drainer().progress(edge)}
        )

    async def stop_edge_drains(_: web.Application) -> None:
        for each in edge_drainers:
            await each.stop()

    app.on_cleanup.append(stop_edge_drains)
    app.router.add_post("/edge-drains", require_token(tokens, start_edge_drain))
    app.router.add_get("/edge-drains/{edge}", require_token(tokens, edge_drain_status))
    app.router.add_post("/drain", require_token(tokens, start_drain))
    app.router.add_get("/drain", require_token(tokens, drain_status))
    app.router.add_post("/drain/cancel", require_token(tokens, cancel_drain))
    app.router.add_post("/disconnect", require_token(tokens, disconnect))

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(pod_stats(gateway, drainer))

    app.router.add_get("/stats", require_token(tokens, stats))


def pod_stats(gateway: Gateway, drainer: Drainer) -> dict[str, Any]:
    """This pod's live figures as JSON (the control plane's fleet page reads them each second
    while someone watches, so nobody parses the Prometheus text): open connections by
    transport, handshakes by outcome ("accepted" or the refusal's reason), the ping round
    trip histogram (cumulative counts at each finite bound) and the drain's progress."""
    bounds: list[float] = []
    cumulative: list[int] = []
    count, total_s = 0, 0.0
    for family in gateway.metrics.ping_rtt.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                if sample.labels["le"] == "+Inf":
                    count = int(sample.value)
                else:
                    bounds.append(float(sample.labels["le"]))
                    cumulative.append(int(sample.value))
            elif sample.name.endswith("_sum"):
                total_s = float(sample.value)
    return {
        "pod_id": gateway.settings.pod_id,
        "connections": gateway.table.counts_by_transport(),
        "handshakes": dict(gateway.metrics.handshakes),
        "ping_rtt": {
            "bounds_s": bounds,
            "cumulative": cumulative,
            "count": count,
            "sum_s": total_s,
        },
        "drain": drainer.progress(),
    }
