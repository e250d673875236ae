"""Text frames a raw WebSocket client gets: valid UTF-8, the backend's bytes kept as they are
when they already are (no decode-encode copy per message)."""

from __future__ import annotations

from sidecar.core.ws_frames import valid_utf8


def test_valid_text_is_passed_on_as_it_is_not_copied() -> None:
    text = "héllo wörld ✓".encode()
    assert valid_utf8(text) is text


def test_invalid_bytes_become_replacement_characters() -> None:
    assert valid_utf8(b"ok \xff and \xc3") == "ok \ufffd and \ufffd".encode()
    assert valid_utf8(b"\xed\xa0\x80") == "\ufffd\ufffd\ufffd".encode()  # a surrogate
