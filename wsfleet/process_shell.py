"""What every server process does around its work: stop its background tasks, open the
registry and listen, each closed by the process's ``AsyncExitStack`` on every path
(startup errors included). Its signals (SIGTERM/SIGINT as events) come from
:mod:`wsfleet.stop_signals`, which every long-running wsfleet process takes them from."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from aiohttp import web

from wsfleet.cancelling import cancel_and_wait
from wsfleet.errors import StartupError
from wsfleet.registry import RegistryUnavailable
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import PodSigner
from wsfleet.settings import redacted_url

Front = Callable[[Callable[[], asyncio.Protocol]], asyncio.Protocol]
"""A listener's own protocol factory: given aiohttp's, a protocol for a new connection."""


def start_tasks(
    stack: contextlib.AsyncExitStack, loops: Iterable[Coroutine[Any, Any, None]]
) -> list[asyncio.Task[None]]:
    """Run each loop as a task, all cancelled and awaited when ``stack`` closes."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    stack.push_async_callback(cancel_and_wait, *tasks)
    return tasks


async def open_registry(
    stack: contextlib.AsyncExitStack, url: str, namespace: str, signer: PodSigner | None
) -> RedisRegistry:
    """The fleet's registry, answering (else :class:`StartupError` naming the Redis), and
    closed when ``stack`` closes."""
    registry = RedisRegistry(url, namespace, signer=signer)
    stack.push_async_callback(registry.close)
    try:
        await registry.ping()
    except RegistryUnavailable as exc:
        raise StartupError(f"cannot reach Redis at {redacted_url(url)}: {exc}") from None
    return registry


async def listen(
    stack: contextlib.AsyncExitStack,
    app: web.Application,
    host: str,
    port: int,
    backlog: int = 128,
    idle_timeout_s: float = 75.0,
    role: str = "",
    front: Front | None = None,
) -> int:
    """Serve ``app`` on ``host:port`` (0: any free port) until ``stack`` closes; the bound
    port. :class:`StartupError` (naming the port's ``role``, if given) when the port cannot
    be had. With a ``front``, each connection starts with the front's protocol, which may
    hand it to ``app`` (with aiohttp's protocol for it)."""
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=idle_timeout_s
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    try:
        if front is None:
            site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True)
            await site.start()
            return int(runner.addresses[0][1])
        aiohttp = runner.server
        assert aiohttp is not None
        server = await asyncio.get_running_loop().create_server(
            lambda: front(aiohttp), host, port, backlog=backlog, reuse_address=True
        )
    except OSError as exc:
        what = f"listen for {role}" if role else "listen"
        raise StartupError(f"cannot {what} on {host}:{port}: {exc.strerror}") from None
    stack.callback(server.close)  # before the runner's cleanup closes aiohttp's connections
    return int(server.sockets[0].getsockname()[1])
