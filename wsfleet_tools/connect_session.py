"""The client of ``wsfleet connect`` (:mod:`wsfleet_tools.connect`): a WebSocket session
that sends each line typed and prints each reply."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from wsfleet.errors import ConfigError, UnreachableError, WsfleetError
from wsfleet.headers import REFUSAL_HEADER
from wsfleet.tokens import key_path, mint_token, read_auth_key

# What Envoy itself means by a refusal that no gateway signed (gateways say why, in a header)
PROXY_REFUSALS = {
    404: "Envoy has no route for this path",
    429: "Envoy's upgrade rate limit: too many handshakes, retry later",
    503: "Envoy found no gateway to send this to; retry later",
}
REPLY_GRACE_S = 1.0  # after end of input, wait this long for replies still on the way


def connect_url(url: str, user_id: str) -> str:
    """``url`` with the ``user`` query parameter Envoy hashes on (sticky routing); the
    SDK has the same helper, but the server package does not depend on the SDK."""
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, urlencode({"user": user_id})) if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/ws", query, parts.fragment))


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
        raise WsfleetError(f"handshake refused: HTTP {exc.status}: {refusal_reason(exc)}") from None
    except aiohttp.ClientError as exc:
        raise UnreachableError(f"cannot connect to {url}: {exc}") from None


def refusal_reason(exc: aiohttp.WSServerHandshakeError) -> str:
    """The gateway's own words ("draining: this gateway is draining"), else Envoy's meaning."""
    signed = exc.headers.get(REFUSAL_HEADER) if exc.headers is not None else None
    if signed:
        return signed
    return PROXY_REFUSALS.get(exc.status, f"{exc.message} (not from a wsfleet gateway)")


async def _show(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            print(f"< {message.data}", flush=True)
        elif message.type is aiohttp.WSMsgType.BINARY:
            print(f"< ({len(message.data)} bytes)", flush=True)
    if ws.close_code is not None and ws.close_code != 1000:
        print(f"closed by server: code {ws.close_code}", file=sys.stderr)
