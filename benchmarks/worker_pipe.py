"""How a benchmark's worker process talks to its parent: JSON lines both ways.

Events go out on stdout (:func:`say`); commands come in on stdin (:func:`commands`), one
JSON object per line, until ``{"cmd": "close"}``, the end of stdin, or a silence of
``idle_s`` (a parent that died must not leave its workers behind). Light on purpose: the
workers import it at start, before their first handshake.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def say(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def commands(
    idle_s: float, handle: Callable[[dict[str, Any]], Awaitable[Any]], worker: str
) -> None:
    """Hand each command to ``handle`` until ``close``, the end of stdin, or ``idle_s``
    without one (then a line naming ``worker`` on stderr)."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        try:
            line = await asyncio.wait_for(stdin.readline(), idle_s)
        except TimeoutError:
            sys.stderr.write(f"{worker}: no command for {idle_s:g} s, exiting\n")
            return
        if not line:
            return
        command: dict[str, Any] = json.loads(line)
        if command["cmd"] == "close":
            return
        await handle(command)
