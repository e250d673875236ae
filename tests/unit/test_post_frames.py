"""POSTed frames are read within bounds: size, count and rate checked before the costly
work, each frame the body's own text of it."""

from __future__ import annotations

import json

import pytest

from sidecar.core.post_frames import (
    FrameTooBig,
    PostBudget,
    PostLimits,
    PostRefused,
    split_frames,
)

LIMITS = PostLimits(max_body_bytes=4096, max_frames=5, max_frame_bytes=100)


def _refusal(body: bytes, limits: PostLimits = LIMITS) -> PostRefused:
    with pytest.raises(PostRefused) as caught:
        split_frames(body, limits)
    assert caught.value.message
    return caught.value


def test_a_list_gives_each_frame_as_its_own_text_unchanged() -> None:
    body = '[ {"type": "message", "data": "é"} ,\n{"type":"ping"}]'.encode()
    assert split_frames(body, LIMITS) == [
        '{"type": "message", "data": "é"}'.encode(),
        b'{"type":"ping"}',
    ]


def test_one_frame_alone_and_an_empty_list() -> None:
    assert split_frames(b' {"type":"ping"} ', LIMITS) == [b'{"type":"ping"}']
    assert split_frames(b"[]", LIMITS) == []
    assert split_frames(b"0", LIMITS) == [b"0"]  # not a v1 frame: the session says so


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


def test_a_budget_takes_body_bytes_and_frames_all_or_nothing() -> None:
    budget = PostBudget(frames_per_s=10, frame_burst=None, bytes_per_s=1000, byte_burst=None)
    assert budget.take_bytes(600, now=0.0)
    assert not budget.take_bytes(600, now=0.0)  # 400 left: none taken
    assert budget.take_bytes(400, now=0.0)
    assert budget.take_frames(8, now=0.0)
    assert not budget.take_frames(3, now=0.0)  # 2 left: none taken
    assert budget.take_frames(0, now=0.0)  # a POST costs one frame at least
    assert budget.take_frames(1, now=0.0)
    assert not budget.take_frames(1, now=0.0)
    assert budget.take_frames(1, now=0.1)  # refilled at the rate
    assert budget.take_bytes(100, now=0.1)


def test_a_budget_with_no_rate_is_unlimited() -> None:
    budget = PostBudget(None, None, 0, 0)
    assert all(budget.take_frames(10**6, now=0.0) for _ in range(3))
    assert all(budget.take_bytes(10**9, now=0.0) for _ in range(3))
