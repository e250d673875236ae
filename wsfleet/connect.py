"""``wsfleet connect``: a tiny interactive client (type a line, see the reply)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import aiohttp

from wsfleet.errors import ConfigError, StartupError
from wsfleet.tokens import key_path, mint_token, read_auth_key
from wsfleet_client import connect_url

HANDSHAKE_HINTS = {
    401: "token missing, expired or invalid",
    403: "token not accepted for this user",
    429: "too many connections or handshakes; retry later",
    503: "no gateway or backend available; retry later",
}
REPLY_GRACE_S = 1.0  # after end of input, wait this long for replies still on the way


async def interactive(url: str, user: str, token: str | None, state_dir: Path) -> None:
    if token is None:
        path = key_path(state_dir)
        if not path.exists():
            raise ConfigError(f"no --token and no auth key in {state_dir}: run `wsfleet up` first")
        token = mint_token(read_auth_key(path), user)
    loop = asyncio.get_running_loop()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                connect_url(url, user), headers={"Authorization": f"Bearer {token}"}
            ) as ws,
        ):
            print(f"connected to {url} as {user}; type a line (Ctrl-D quits)", file=sys.stderr)
            reader = asyncio.create_task(_show(ws))
            while not reader.done():
                reading = loop.run_in_executor(None, sys.stdin.readline)
                await asyncio.wait({reading, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    break  # the server closed; the pending readline ends with the process
                line = reading.result()
                if not line:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(reader), REPLY_GRACE_S)
                    await ws.close()
                    break
                await ws.send_str(line.rstrip("\n"))
            await reader
    except aiohttp.WSServerHandshakeError as exc:
        hint = HANDSHAKE_HINTS.get(exc.status, exc.message)
        raise StartupError(f"handshake refused: HTTP {exc.status} ({hint})") from None
    except aiohttp.ClientError as exc:
        raise StartupError(f"cannot connect to {url}: {exc}") from None


async def _show(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            print(f"< {message.data}", flush=True)
        elif message.type is aiohttp.WSMsgType.BINARY:
            print(f"< ({len(message.data)} bytes)", flush=True)
    if ws.close_code is not None and ws.close_code != 1000:
        print(f"closed by server: code {ws.close_code}", file=sys.stderr)
