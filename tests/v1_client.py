"""A bare protocol v1 WebSocket client for tests that look at frames themselves (the SDKs
hide them): every frame it receives is kept, in order, and can be waited for."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp

from tests.helpers import until
from wsfleet.headers import POD_HEADER
from wsfleet.tokens import mint_token, read_auth_key
from wsfleet_tools.launcher.fleet import LocalFleet

Frame = dict[str, Any]


class V1Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, pod: str) -> None:
        self.ws = ws
        self.pod = pod
        self.frames: list[Frame] = []
        self.close_code: int | None = None
        self._ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        fleet: LocalFleet,
        http: aiohttp.ClientSession,
        user: str,
        claims: dict[str, object] | None = None,
        raw: bool = False,
        url: str | None = None,
    ) -> V1Client:
        token = mint_token(read_auth_key(fleet.state_dir / "auth.key"), user, extra_claims=claims)
        ws = await http.ws_connect(
            f"{url or fleet.client_url}?user={user}",
            headers={"Authorization": f"Bearer {token}"},
            protocols=() if raw else ("wsfleet.v1",),
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
        client = cls(ws, ws._response.headers.get(POD_HEADER, ""))  # raw: the 101 names it
        if not raw:
            [welcome] = await client.wait("welcome")
            client.pod = welcome["pod"]
        return client

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    self.frames.append(json.loads(message.data))
                except ValueError:
                    self.frames.append({"type": "raw", "data": message.data})
            elif message.type is aiohttp.WSMsgType.BINARY:
                self.frames.append({"type": "raw", "data": message.data})
        self.close_code = self.ws.close_code

    def of(self, kind: str, channel: str | None = None) -> list[Frame]:
        return [
            f
            for f in self.frames
            if f.get("type") == kind and (channel is None or f.get("channel") == channel)
        ]

    async def wait(self, kind: str, count: int = 1, channel: str | None = None) -> list[Frame]:
        await until(lambda: len(self.of(kind, channel)) >= count, 20, f"{count} {kind} frames")
        return self.of(kind, channel)

    async def request(self, kind: str, channel: str, **fields: Any) -> Frame:
        """Send a channel request; its answer (the frame with its id)."""
        request_id = next(self._ids)
        await self.ws.send_str(
            json.dumps({"type": kind, "id": request_id, "channel": channel, **fields})
        )
        await until(
            lambda: any(f.get("id") == request_id for f in self.frames), 20, f"the answer to {kind}"
        )
        return next(f for f in self.frames if f.get("id") == request_id)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
