"""Property-based fuzzing of what the SSE and long-poll transports take from a client: a
POSTed body is frames within the limits or one documented refusal, never a crash; a
poll buffer keeps its bounds and its accounting whatever happens to it."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.core.poll_buffer import PollBuffer, poll_answer
from sidecar.core.post_frames import FrameTooBig, PostLimits, PostRefused, split_frames

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FRAME = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "ping", "subscribe", "x"])},
    optional={"cseq": st.integers(-2, 2**70), "data": st.text(max_size=40), "x": JSON},
)
SPACE = st.text(" \t\r\n", max_size=3)
LIMITS = st.builds(
    PostLimits,
    max_body_bytes=st.integers(1, 2000),
    max_frames=st.integers(1, 8),
    max_frame_bytes=st.integers(1, 300),
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A list of frames laid out with any JSON whitespace, a single value, or noise."""
    kind = draw(st.sampled_from(["list", "value", "noise", "cut"]))
    if kind == "list":
        items = draw(st.lists(FRAME | JSON, max_size=10))
        sep = draw(SPACE)
        text = "[" + sep + ("," + sep).join(json.dumps(item) for item in items) + sep + "]"
        return text.encode()
    if kind == "value":
        return (draw(SPACE) + json.dumps(draw(FRAME | JSON)) + draw(SPACE)).encode()
    if kind == "cut":
        whole = json.dumps(draw(st.lists(FRAME, min_size=1, max_size=4))).encode()
        return whole[: draw(st.integers(0, len(whole) - 1))]
    return draw(st.binary(max_size=300))


@FUZZ
@given(bodies(), LIMITS)
def test_a_posted_body_is_frames_within_the_limits_or_one_refusal(
    body: bytes, limits: PostLimits
) -> None:
    try:
        frames = split_frames(body, limits)
    except PostRefused as refused:
        assert refused.message and refused.error
        assert refused.status == 413 or (refused.status, refused.error) == (400, "bad_frame")
        if isinstance(refused, FrameTooBig):
            assert refused.status == 413
        return
    assert len(body) <= limits.max_body_bytes and len(frames) <= limits.max_frames
    assert all(len(frame.text) <= limits.max_frame_bytes for frame in frames)
    whole = json.loads(body)  # accepted: JSON, and every frame is its own item unchanged
    items = whole if isinstance(whole, list) else [whole]
    assert [json.loads(frame.text) for frame in frames] == items
    assert [frame.value for frame in frames] == items  # and its value, parsed once


@FUZZ
@given(st.lists(FRAME, max_size=6), LIMITS)
def test_a_list_within_every_limit_is_accepted_whole(
    items: list[object], limits: PostLimits
) -> None:
    body = json.dumps(items).encode()
    fits = (
        len(body) <= limits.max_body_bytes
        and len(items) <= limits.max_frames
        and all(len(json.dumps(item).encode()) <= limits.max_frame_bytes for item in items)
    )
    if fits:
        assert [frame.value for frame in split_frames(body, limits)] == items


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.booleans(), st.integers(1, 400)),
        st.tuples(st.just("ack"), st.integers(-1, 40), st.just(0)),
        st.tuples(st.just("take"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@FUZZ
@given(OPERATIONS, st.integers(1, 10), st.integers(1, 2000))
def test_a_poll_buffer_keeps_its_bounds_and_its_accounting(
    operations: list[tuple[str, object, int]], max_frames: int, max_bytes: int
) -> None:
    buffer = PollBuffer(max_frames, max_bytes)
    next_seq, largest, kept = 1, 0, []  # kept: (seq, frame) as a model
    for name, argument, size in operations:
        if name == "add":
            if not buffer.has_room:  # the writer waits: nothing is added
                continue
            seq = next_seq if argument else 0
            next_seq += bool(argument)
            frame = json.dumps({"seq": seq, "pad": "x" * size}).encode()
            largest = max(largest, len(frame))
            buffer.add(seq, frame)
            kept.append((seq, frame))
        elif name == "ack":
            assert isinstance(argument, int)
            buffer.acknowledge(argument)
            kept = [(seq, frame) for seq, frame in kept if not seq or seq > argument]
        else:
            answer = buffer.take()
            assert answer == [frame for _, frame in kept]
            assert json.loads(poll_answer("s", answer, None))["frames"] == [
                json.loads(frame) for frame in answer
            ]
            kept = [(seq, frame) for seq, frame in kept if seq]
        assert len(buffer) == len(kept) <= max_frames
        assert buffer.bytes_held == sum(len(frame) for _, frame in kept)
        assert buffer.bytes_held < max_bytes + largest or not kept
