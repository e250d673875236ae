"""How a process learns it should stop: SIGTERM or Ctrl-C, once to stop gracefully, twice
to hurry. Kept apart from :mod:`wsfleet.process_shell` (ports, the registry, tasks) so a
process that needs only this imports nothing else."""

from __future__ import annotations

import asyncio
import signal


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
