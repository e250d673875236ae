"""The chat's page and what it needs: the page, the browser SDK, and a token for the name
the user types (a real application would check who they are first: this one trusts the
name, it is a demo)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from wsfleet.tokens import mint_token

STATIC = Path(__file__).resolve().parent / "static"
SDK = Path(__file__).resolve().parents[2] / "sdk" / "js" / "wsfleet.js"
MAX_NAME = 32


def page_app(client_url: str, auth_key: bytes) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        user = request.query.get("user", "").strip()
        if not user or len(user) > MAX_NAME or not user.replace("-", "").replace("_", "").isalnum():
            return web.json_response(
                {"error": f"a name is 1 to {MAX_NAME} letters, digits, - or _"}, status=400
            )
        claims: dict[str, object] = {"channels": ["chat:*"]}
        return web.json_response(
            {"user": user, "token": mint_token(auth_key, user, 3600, extra_claims=claims)}
        )

    async def config(_: web.Request) -> web.Response:
        return web.json_response({"url": client_url})

    async def sdk(_: web.Request) -> web.FileResponse:
        return web.FileResponse(SDK, headers={"Content-Type": "text/javascript"})

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/token", token)
    app.router.add_get("/config", config)
    app.router.add_get("/wsfleet.js", sdk)
    app.router.add_static("/static/", STATIC)
    return app
