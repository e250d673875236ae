"""The sidecar's local admin API: drain this pod, disconnect its connections.

Both need this pod's own admin token, derived from its pod key (the control plane derives
it from the fleet's root key; :mod:`wsfleet.registry.signing`), or the operators' token if
``--admin-token-file`` gives one (the local fleet and the manifests do not: a pod learns
no credential that works on another). See docs/openapi/sidecar-admin.yaml.
"""

from __future__ import annotations

from aiohttp import web

from sidecar.core.close_codes import OPERATOR_CLOSE_CODES, CloseCode
from sidecar.drain import Drainer
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

    app.router.add_post("/drain", require_token(tokens, start_drain))
    app.router.add_get("/drain", require_token(tokens, drain_status))
    app.router.add_post("/drain/cancel", require_token(tokens, cancel_drain))
    app.router.add_post("/disconnect", require_token(tokens, disconnect))
