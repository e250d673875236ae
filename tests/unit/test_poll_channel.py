"""The long-poll buffer: acknowledging numbered frames keeps what is not yet taken."""

from __future__ import annotations

from sidecar.http_transports import PollChannel


async def test_an_acknowledgement_keeps_unnumbered_frames_until_a_poll_takes_them() -> None:
    channel = PollChannel()
    channel.write(b"message-1", False, 1)
    channel.write(b"answer", False, 0)  # an answer to a channel request: not numbered
    channel.write(b"message-2", False, 2)
    channel.acknowledge(1)  # the next poll says it has message 1
    frames, closed = await channel.take(0.0)
    assert frames == [b"answer", b"message-2"] and closed is None
    frames, _ = await channel.take(0.0)
    assert frames == [b"message-2"]  # numbered frames stay until acknowledged
