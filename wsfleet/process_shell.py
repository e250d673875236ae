"""What every server process does around its work: turn SIGTERM/SIGINT into events, and
stop its background tasks. Every long-running wsfleet process (control plane, sidecars,
the demo backend, the local fleet, the fault proxy) takes its signals from it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable


def signal_events() -> tuple[asyncio.Event, asyncio.Event]:
    """``(stop, hurry)``: the first SIGTERM or SIGINT sets ``stop`` (a graceful stop: a
    sidecar drains), a second one sets ``hurry`` (finish now)."""
    stop, hurry = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    return stop, hurry


async def stop_tasks(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks and wait until each has ended."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
