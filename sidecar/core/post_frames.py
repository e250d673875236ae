"""The frames a client POSTs to ``/sse/send`` and ``/poll/send``, read within bounds.

A body is one v1 frame or a JSON list of frames. Its limits are checked before the costly
work, never after a parse of the whole body: the body's size before it is read
(:class:`PostLimits`), the number of frames while the list is scanned (the scan stops at
the first frame past the cap), each frame's size as it is found, and the session's rates
(:func:`read_post`: counted once, in the session's core, all or nothing per POST)
before anything is handed on. A frame is the body's own text of it, never re-encoded:
the session's v1 parser reads it as it reads a WebSocket frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import NamedTuple

from sidecar.core.session import SessionCore

_decoder = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace, skipped in C


class PostRefused(ValueError):
    """A POST that is refused whole (nothing of it handed on): its HTTP status, the error
    name of the answer and a sentence saying why."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


@dataclass(frozen=True, slots=True)
class PostLimits:
    """What one POST may carry: body bytes, frames, and bytes per frame."""

    max_body_bytes: int
    max_frames: int
    max_frame_bytes: int

    def check_length(self, content_length: int | None) -> None:
        """Refuse (413) a body announced larger than the limit, before it is read."""
        if content_length is not None and content_length > self.max_body_bytes:
            raise too_big_body(self.max_body_bytes)


def too_big_body(limit: int) -> PostRefused:
    return PostRefused(413, "too_big", f"the request body exceeds {limit} bytes")


def bad_body(why: str) -> PostRefused:
    return PostRefused(400, "bad_frame", f"the body must be a v1 frame or a list of frames: {why}")


class PostedFrame(NamedTuple):
    """A frame of a POST: the body's own text of it (UTF-8), and its JSON value, parsed
    once as the body is split (the session reads the value, never the text again)."""

    text: bytes
    value: object


class FrameTooBig(PostRefused):
    """A frame larger than the maximum message size (the session closes with 1009, as a
    WebSocket's does)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_big", f"a message exceeds the maximum size ({limit} bytes)")


def split_frames(body: bytes, limits: PostLimits) -> list[PostedFrame]:
    """The frames in ``body``, each as its own JSON text (UTF-8) and its value.

    Raises :class:`PostRefused`: 413 when the body, the number of frames or a frame is
    over its limit (:class:`FrameTooBig` for a frame), 400 when the body is not JSON.
    Work is bounded by ``max_body_bytes``, and stops at the first frame past
    ``max_frames``.
    """
    if len(body) > limits.max_body_bytes:
        raise too_big_body(limits.max_body_bytes)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_body("not UTF-8") from None
    start = _skip(text, 0)
    if start < len(text) and text[start] == "[":
        frames, end = _list_items(text, start + 1, limits)
    else:
        frame, end = _value(text, start, limits)
        frames = [frame]
    if _skip(text, end) != len(text):
        raise bad_body("text after the JSON value")
    return frames


def _list_items(text: str, index: int, limits: PostLimits) -> tuple[list[PostedFrame], int]:
    """The items of the list whose ``[`` is just before ``index``; and where it ends."""
    frames: list[PostedFrame] = []
    index = _skip(text, index)
    if index < len(text) and text[index] == "]":
        return frames, index + 1
    while True:
        if len(frames) == limits.max_frames:
            raise PostRefused(
                413, "too_many_frames", f"a request carries at most {limits.max_frames} frames"
            )
        frame, index = _value(text, _skip(text, index), limits)
        frames.append(frame)
        index = _skip(text, index)
        if index >= len(text):
            raise bad_body("the list is not closed")
        if text[index] == "]":
            return frames, index + 1
        if text[index] != ",":
            raise bad_body("list items must be separated by commas")
        index += 1


def _value(text: str, index: int, limits: PostLimits) -> tuple[PostedFrame, int]:
    """One JSON value starting at ``index``, as its UTF-8 text and its value; and where
    it ends."""
    try:
        value, end = _decoder.raw_decode(text, index)
    except ValueError:  # json.JSONDecodeError, or nothing there
        raise bad_body("not JSON") from None
    except RecursionError:  # thousands of nested brackets
        raise bad_body("nested too deeply") from None
    frame = text[index:end].encode()
    if len(frame) > limits.max_frame_bytes:
        raise FrameTooBig(limits.max_frame_bytes)
    return PostedFrame(frame, value), end


def _skip(text: str, index: int) -> int:
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


class OverRate(PostRefused):
    """A POST past the connection's rates (429): nothing of it counted or handed on."""

    def __init__(self) -> None:
        super().__init__(429, "rate_limited", "this request exceeds this connection's rate")


def read_post(
    body: bytes, limits: PostLimits, session: SessionCore, now: float
) -> list[PostedFrame]:
    """The frames of a POST, counted once against the session's own limits (the ones a
    WebSocket's frames meet), all or nothing: its body bytes before it is parsed, so a
    client cannot make the gateway parse faster than the byte rate; its frames once
    split (at least one: an empty list costs a request too). The frames then go to the
    session with ``counted=True`` and their parsed values: not counted, not parsed again.

    Raises :class:`OverRate` past a rate (and the session is closing, 1008, when the
    action is ``close``), or :class:`PostRefused` as :func:`split_frames` does.
    """
    if not session.client_batch(0, len(body), now):
        raise OverRate()
    frames = split_frames(body, limits)
    if not session.client_batch(max(1, len(frames)), 0, now):
        raise OverRate()
    return frames


__all__ = [
    "FrameTooBig",
    "OverRate",
    "PostLimits",
    "PostRefused",
    "PostedFrame",
    "read_post",
    "split_frames",
]
