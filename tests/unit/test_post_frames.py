"""POSTed frames are read within bounds: size, count and rate checked before the costly
work, each frame the body's own text of it, and counted once, by the session's own
limiter (the one a WebSocket's frames meet)."""

from __future__ import annotations

import json

import pytest

from sidecar.core import envelope, post_frames
from sidecar.core.close_codes import CloseCode
from sidecar.core.post_frames import (
    FrameTooBig,
    OverRate,
    PostLimits,
    PostRefused,
    read_post,
    split_frames,
)
from sidecar.core.rate_limit import InboundLimits, InboundVerdict
from sidecar.core.resume import Sequencer
from sidecar.core.session import QueueBounds, SessionCore, SessionCounters

LIMITS = PostLimits(max_body_bytes=4096, max_frames=5, max_frame_bytes=100)
BOUNDS = QueueBounds(messages=100, bytes=1_000_000, slow_consumer_grace_s=5.0)


def _texts(body: bytes, limits: PostLimits = LIMITS) -> list[bytes]:
    return [frame.text for frame in split_frames(body, limits)]


def _refusal(body: bytes, limits: PostLimits = LIMITS) -> PostRefused:
    with pytest.raises(PostRefused) as caught:
        split_frames(body, limits)
    assert caught.value.message
    return caught.value


def test_a_list_gives_each_frame_as_its_own_text_unchanged() -> None:
    body = '[ {"type": "message", "data": "é"} ,\n{"type":"ping"}]'.encode()
    assert split_frames(body, LIMITS) == [
        ('{"type": "message", "data": "é"}'.encode(), {"type": "message", "data": "é"}),
        (b'{"type":"ping"}', {"type": "ping"}),
    ]


def test_one_frame_alone_and_an_empty_list() -> None:
    assert _texts(b' {"type":"ping"} ') == [b'{"type":"ping"}']
    assert split_frames(b"[]", LIMITS) == []
    assert split_frames(b"0", LIMITS) == [(b"0", 0)]  # not a v1 frame: the session says so


def test_the_frame_count_is_checked_before_the_next_frame_is_parsed() -> None:
    # the sixth item is not even JSON: the count refuses the body before reading it
    refusal = _refusal(b"[" + b"0," * LIMITS.max_frames + b"nonsense]")
    assert (refusal.status, refusal.error) == (413, "too_many_frames")
    assert len(split_frames(b"[" + b",".join([b"0"] * LIMITS.max_frames) + b"]", LIMITS)) == 5


def test_a_body_over_the_limit_is_refused_before_it_is_read_or_parsed() -> None:
    with pytest.raises(PostRefused) as caught:
        LIMITS.check_length(4097)
    assert (caught.value.status, caught.value.error) == (413, "too_big")
    LIMITS.check_length(4096)
    LIMITS.check_length(None)  # no length: the reader counts as it reads
    assert _refusal(b" " * 4097).status == 413


def test_a_frame_over_the_message_size_is_too_big() -> None:
    big = json.dumps({"type": "message", "data": "x" * 100}).encode()
    with pytest.raises(FrameTooBig) as caught:
        split_frames(b"[" + big + b"]", LIMITS)
    assert caught.value.status == 413


@pytest.mark.parametrize(
    "body",
    [b"", b"[", b"[0", b"[0 0]", b"[0,]", b'{"a":1} x', b"\xff\xfe", b"[" * 50_000, b"{"],
)
def test_a_body_that_is_not_json_is_a_bad_frame(body: bytes) -> None:
    limits = PostLimits(max_body_bytes=100_000, max_frames=5, max_frame_bytes=100_000)
    refusal = _refusal(body, limits)
    assert (refusal.status, refusal.error) == (400, "bad_frame")


class CountingLimits(InboundLimits):
    """The session's limiter, counting how often it is asked."""

    checks = 0

    def check(self, size: int, now: float, count: int = 1) -> InboundVerdict:
        self.checks += 1
        return super().check(size, now, count)


def _core(limits: InboundLimits | None) -> tuple[SessionCore, SessionCounters]:
    counters = SessionCounters()
    core = SessionCore("s1", Sequencer(), counters, BOUNDS, lambda: limits)
    return core, counters


def _message(cseq: int) -> bytes:
    return json.dumps({"type": "message", "cseq": cseq, "data": "hi"}).encode()


def test_a_posted_frame_is_counted_once_by_the_sessions_own_limiter() -> None:
    limits = CountingLimits(messages_per_s=5, bytes_per_s=10_000)
    core, _ = _core(limits)
    body = b"[" + b",".join(_message(cseq) for cseq in range(1, 6)) + b"]"
    frames = read_post(body, LIMITS, core, now=0.0)
    handed_on = [
        core.client_frame(frame.text, False, 0.0, counted=True, value=frame.value)
        for frame in frames
    ]
    # 5 frames at a limit of 5: all go on, the limiter asked twice for the whole POST
    # (its bytes before the parse, its frames after), never again per frame
    assert [m.cseq for m in handed_on if isinstance(m, envelope.ClientMessage)] == [1, 2, 3, 4, 5]
    assert limits.checks == 2 and core.closing is None
    with pytest.raises(OverRate):  # and the limit is spent: one more frame is refused
        read_post(_message(6), LIMITS, core, now=0.0)
    assert [f.text for f in read_post(_message(6), LIMITS, core, now=0.2)] == [_message(6)]


def test_the_body_bytes_are_counted_before_the_body_is_parsed() -> None:
    core, counters = _core(InboundLimits(messages_per_s=100, bytes_per_s=100, on_exceed="drop"))
    # not JSON, but over the byte rate: refused for the rate, never parsed
    with pytest.raises(OverRate) as caught:
        read_post(b"nonsense" * 20, LIMITS, core, now=0.0)
    assert (caught.value.status, caught.value.error) == (429, "rate_limited")
    assert counters.rate_limited_drops == 1 and core.closing is None  # drop: it lives on
    # whitespace is body too: 60 + 60 bytes do not fit a second's 100
    padded = b" " * 45 + b'{"type":"ping"}'
    assert read_post(padded, LIMITS, core, now=0.0) == [(b'{"type":"ping"}', {"type": "ping"})]
    with pytest.raises(OverRate):
        read_post(padded, LIMITS, core, now=0.0)


def test_a_post_over_the_frame_rate_is_refused_whole_and_closes_1008_with_close() -> None:
    core, counters = _core(InboundLimits(messages_per_s=3, on_exceed="close"))
    with pytest.raises(OverRate):
        read_post(b"[" + b",".join([b"0"] * 4) + b"]", LIMITS, core, now=0.0)
    assert core.closing == (CloseCode.POLICY_VIOLATION, "rate limit exceeded")
    assert counters.rate_limited_closes == 1


def test_an_empty_list_costs_a_frame_and_none_is_refused_without_limits() -> None:
    core, _ = _core(InboundLimits(messages_per_s=2, on_exceed="drop"))
    assert read_post(b"[]", LIMITS, core, now=0.0) == []
    assert read_post(b"[]", LIMITS, core, now=0.0) == []
    with pytest.raises(OverRate):
        read_post(b"[]", LIMITS, core, now=0.0)
    unlimited, _ = _core(None)
    five = b"[" + b",".join([b"0"] * 5) + b"]"
    assert all(len(read_post(five, LIMITS, unlimited, now=0.0)) == 5 for _ in range(1000))


def test_a_poll_over_the_rate_is_refused_but_never_closes_the_session() -> None:
    core, counters = _core(InboundLimits(messages_per_s=2, on_exceed="close"))
    assert core.client_batch(1, 0, 0.0, may_close=False)
    assert len(read_post(b"0", LIMITS, core, now=0.0)) == 1  # polls and frames: one bucket
    assert not core.client_batch(1, 0, 0.0, may_close=False)
    assert core.closing is None and counters.rate_limited_drops == 1


def test_a_posted_frame_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parses: list[str] = []
    decoder, loads = post_frames._decoder, json.loads

    class CountingDecoder:
        def raw_decode(self, text: str, index: int) -> tuple[object, int]:
            parses.append("split")
            return decoder.raw_decode(text, index)

    def counting_loads(text: str) -> object:
        parses.append("session")
        return loads(text)

    monkeypatch.setattr(post_frames, "_decoder", CountingDecoder())
    monkeypatch.setattr(json, "loads", counting_loads)
    core, _ = _core(None)
    body = b"[" + b",".join(_message(cseq) for cseq in range(1, 4)) + b"]"
    handed_on = [
        core.client_frame(frame.text, False, 0.0, counted=True, value=frame.value)
        for frame in read_post(body, LIMITS, core, now=0.0)
    ]
    assert [m.cseq for m in handed_on if isinstance(m, envelope.ClientMessage)] == [1, 2, 3]
    assert parses == ["split"] * 3  # the session reads each value, never the text again
