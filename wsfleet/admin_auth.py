"""Bearer-token protection for admin HTTP APIs (control plane and sidecars).

The token lives in a file (:mod:`wsfleet.admin_token`).
A request without the right ``Authorization: Bearer`` gets 401 and changes
nothing; with no token configured, protected endpoints answer 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def require_token(token: str | tuple[str, ...] | None, handler: Handler) -> Handler:
    """Wrap ``handler`` so that it runs only for ``Authorization: Bearer <token>`` (any of
    several tokens, when given a tuple: a pod accepts the operators' token and its own)."""
    accepted = tuple(t.encode() for t in ((token,) if isinstance(token, str) else token or ()))

    async def guarded(request: web.Request) -> web.StreamResponse:
        if not accepted:
            return error(403, "admin API disabled: no admin token configured")
        offered = request.headers.get("Authorization", "")
        given = offered[7:].strip().encode() if offered.startswith("Bearer ") else b""
        matches = [hmac.compare_digest(given, t) for t in accepted]  # all compared: no timing
        if not given or not any(matches):
            return error(401, "missing or wrong admin token (Authorization: Bearer <token>)")
        return await handler(request)

    return guarded


async def json_body(request: web.Request) -> dict[str, object]:
    """The request's JSON object, or an HTTPBadRequest with a JSON message."""
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "the body must be a JSON object"}', content_type="application/json"
        ) from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "the body must be a JSON object"}', content_type="application/json"
        )
    return body
