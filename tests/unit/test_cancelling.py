"""Stopping a task ends it even when it swallows a cancellation (as Python 3.11's
asyncio.wait_for does when the awaited result arrives with the cancel)."""

from __future__ import annotations

import asyncio

import pytest

from wsfleet.cancelling import cancel_and_wait


class SwallowsOnce:
    """A task's work that drops the first cancellation it gets, as a lost one looks."""

    def __init__(self) -> None:
        self.swallowed = 0
        self.swallowed_one = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed += 1
                self.swallowed_one.set()


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again() -> None:
    work = SwallowsOnce()
    task = asyncio.create_task(work.run())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled() and work.swallowed == 1


async def test_cancelled_once_the_same_task_would_still_be_running() -> None:
    """The control: one cancel, as before, leaves such a task running (it sleeps an hour
    after swallowing it, so it cannot end by itself)."""
    work = SwallowsOnce()
    task = asyncio.create_task(work.run())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(work.swallowed_one.wait(), 5)  # delivered on the task's next step
    assert not task.done()
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled()


async def test_a_failed_task_raises_its_error_and_none_is_nothing_to_stop() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await cancel_and_wait(None, task)
    await cancel_and_wait(None)
