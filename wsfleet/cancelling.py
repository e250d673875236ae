"""Stopping tasks: cancel, and wait until they have ended.

A cancellation can be lost: on Python 3.11, ``asyncio.wait_for`` returns the result of an
awaitable that finished as the cancel arrived instead of raising ``CancelledError``, and
redis-py sends every command through it when a socket timeout is set (ours always is). A
task cancelled while it sent a command then went on running, and whoever awaited it (a
process's stop, a store's close) waited forever: a control plane hung at SIGTERM. Here a
task that is still running after :data:`CANCEL_AGAIN_S` is cancelled again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

CANCEL_AGAIN_S = 0.1


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel the tasks (None: nothing to stop) and return once each has ended. One that
    failed with an exception other than its cancellation raises it here, as awaiting it
    would."""
    started = [task for task in tasks if task is not None]
    pending = [task for task in started if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)
        pending = [task for task in pending if not task.done()]
    for task in started:
        with contextlib.suppress(asyncio.CancelledError):
            await task
