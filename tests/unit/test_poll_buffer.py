"""A long-poll session's buffer is bounded in bytes as well as frames, pushes back when
full, and a poll's answer is the frames' own text joined."""

from __future__ import annotations

import asyncio
import json

import pytest

from sidecar.core import envelope
from sidecar.core.poll_buffer import PollBuffer, poll_answer
from sidecar.http_transports import PollChannel

FRAME_60_KB = envelope.message(1, b"y" * 60_000, False)


def _numbered(seq: int, size: int = 100) -> bytes:
    return envelope.message(seq, b"x" * size, False)


def test_the_buffer_is_full_at_its_byte_bound_whatever_the_frame_count() -> None:
    buffer = PollBuffer(max_frames=1000, max_bytes=1000)
    seq = 0
    while buffer.has_room:
        seq += 1
        buffer.add(seq, _numbered(seq))
    assert len(buffer) < 1000
    assert 1000 <= buffer.bytes_held < 1000 + len(_numbered(seq))  # at most one frame over


def test_a_client_that_never_acknowledges_leaves_it_full() -> None:
    buffer = PollBuffer(max_frames=1000, max_bytes=1000)
    for seq in range(1, 20):
        if buffer.has_room:
            buffer.add(seq, _numbered(seq))
    first = buffer.take()
    assert buffer.take() == first and not buffer.has_room  # sent again, kept
    buffer.acknowledge(0)
    assert not buffer.has_room
    buffer.acknowledge(len(first))
    assert len(buffer) == 0 and buffer.bytes_held == 0 and buffer.has_room


def test_the_frame_bound_still_holds() -> None:
    buffer = PollBuffer(max_frames=3, max_bytes=1 << 20)
    for seq in (1, 2, 3):
        buffer.add(seq, b"{}")
    assert not buffer.has_room


def test_unnumbered_frames_go_once_and_their_bytes_with_them() -> None:
    buffer = PollBuffer()
    buffer.add(1, b'{"seq":1}')
    buffer.add(0, b'{"answer":1}')
    buffer.add(2, b'{"seq":2}')
    assert buffer.take() == [b'{"seq":1}', b'{"answer":1}', b'{"seq":2}']
    assert buffer.take() == [b'{"seq":1}', b'{"seq":2}']
    assert buffer.bytes_held == len(b'{"seq":1}') + len(b'{"seq":2}')
    buffer.acknowledge(1)
    assert buffer.take() == [b'{"seq":2}'] and buffer.bytes_held == len(b'{"seq":2}')


def test_an_answer_joins_the_frames_as_they_are() -> None:
    frames = [_numbered(1), envelope.notice("rate_limited").encode()]
    answer = json.loads(poll_answer('s"1', frames, (1013, "slow consumer")))
    assert answer == {
        "session": 's"1',
        "frames": [
            json.loads(frames[0]),
            json.loads(frames[1]),
            {"type": "close", "code": 1013, "reason": "slow consumer"},
        ],
    }
    assert json.loads(poll_answer("s", [], None)) == {"session": "s", "frames": []}


def test_a_buffer_needs_room() -> None:
    with pytest.raises(ValueError):
        PollBuffer(max_frames=0)


async def test_a_poll_channel_pushes_back_at_its_byte_bound_until_the_client_acknowledges() -> None:
    channel = PollChannel()  # the defaults: 1,000 frames, 1 MiB
    channel.opening = False  # opened: the welcome went
    held, waiting = 0, None
    while waiting is None and held < 100:  # as the session's writer: until a write waits
        waiting = channel.write(FRAME_60_KB, False, held + 1)
        held += waiting is None
    assert waiting is not None and held == 18, "1 MiB of 60 KB frames, then it pushes back"
    writer = asyncio.ensure_future(waiting)
    frames, _ = await channel.take(0.0)
    assert len(frames) == held
    channel.acknowledge(0)  # a poll that acknowledges nothing makes no room
    await asyncio.sleep(0)
    assert not writer.done()
    channel.acknowledge(held)
    await asyncio.wait_for(writer, 5)
    frames, _ = await channel.take(0.0)
    assert len(frames) == 1


async def test_a_resumed_poll_session_gets_its_whole_replay_before_the_bound_applies() -> None:
    """The welcome and the replay are written (and awaited) before the first answer: a
    bound that made them wait would hold the poll forever."""
    channel = PollChannel(max_frames=1000, max_bytes=1000)
    writes = [channel.write(_numbered(seq), False, seq) for seq in range(1, 1002)]
    assert all(pending is None for pending in writes)  # a welcome + 1,000 replayed
    channel.opening = False
    waiting = channel.write(_numbered(1002), False, 1002)
    assert asyncio.iscoroutine(waiting)
    waiting.close()
