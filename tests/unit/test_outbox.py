"""The outbox: everything queued leaves in one take, within count and byte bounds."""

from __future__ import annotations

import asyncio

import pytest

from wsfleet.outbox import Outbox, OutboxClosed


async def test_a_take_hands_over_everything_queued_in_order() -> None:
    box: Outbox[int] = Outbox(limit=100, max_batch_items=10, max_batch_bytes=1000)
    for n in range(5):
        box.put(n, 1)
    assert await box.take() == [0, 1, 2, 3, 4]
    assert len(box) == 0


async def test_a_batch_stops_at_the_item_or_byte_bound_but_always_carries_one() -> None:
    box: Outbox[str] = Outbox(limit=100, max_batch_items=3, max_batch_bytes=100)
    for name in "abcde":
        box.put(name, 10)
    assert await box.take() == ["a", "b", "c"]
    assert await box.take() == ["d", "e"]
    box.put("big", 500)
    box.put("small", 10)
    assert await box.take() == ["big"]  # alone: larger than the bound
    assert await box.take() == ["small"]
    box.put("x", 60)
    box.put("y", 60)
    assert await box.take() == ["x"]


async def test_a_watermark_replaces_the_one_not_yet_taken() -> None:
    box: Outbox[str] = Outbox(limit=100, max_batch_items=10, max_batch_bytes=1000)
    box.put("message", 1)
    box.put_latest("session-a", "acked-1")
    box.put_latest("session-a", "acked-2")
    box.put_latest("session-b", "acked-7")
    assert await box.take() == ["message", "acked-2", "acked-7"]


async def test_a_full_outbox_makes_producers_wait_until_the_writer_takes() -> None:
    box: Outbox[int] = Outbox(limit=2, max_batch_items=10, max_batch_bytes=1000)
    box.put(1)
    box.put(2)
    assert box.full
    waiting = asyncio.create_task(box.wait_space())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await box.take() == [1, 2]
    await asyncio.wait_for(waiting, 1.0)
    assert not box.full


async def test_the_writer_waits_for_work_and_stops_after_close() -> None:
    box: Outbox[int] = Outbox(limit=10, max_batch_items=10, max_batch_bytes=1000)
    taking = asyncio.create_task(box.take())
    await asyncio.sleep(0)
    assert not taking.done()
    box.put(7)
    assert await asyncio.wait_for(taking, 1.0) == [7]
    box.put(8)
    box.close()
    assert await box.take() == [8]
    with pytest.raises(OutboxClosed):
        await box.take()


async def test_a_take_soon_after_the_last_waits_out_the_spacing_and_carries_what_came() -> None:
    loop = asyncio.get_running_loop()
    box: Outbox[int] = Outbox(limit=100, max_batch_items=10, max_batch_bytes=1000, spacing_s=0.2)
    box.put(1, 1)
    assert await box.take() == [1]  # the first after a quiet spell leaves at once
    taken_at = loop.time()
    box.put(2, 1)
    later = asyncio.ensure_future(box.take())
    await asyncio.sleep(0)
    box.put(3, 1)  # arrives while the take waits: it joins the batch
    assert await later == [2, 3]
    assert loop.time() - taken_at >= 0.2


async def test_a_full_batch_does_not_wait_for_the_spacing() -> None:
    box: Outbox[int] = Outbox(limit=100, max_batch_items=3, max_batch_bytes=1000, spacing_s=3600)
    box.put(0, 1)
    await box.take()
    for n in range(3):
        box.put(n, 1)
    assert await asyncio.wait_for(box.take(), 30) == [0, 1, 2]
