"""Protocol v1 envelopes: what the gateway writes reads back exactly; bad frames are named."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import envelope


@given(seq=st.integers(min_value=0, max_value=2**63), text=st.text())
def test_a_text_message_reads_back_as_the_same_json(seq: int, text: str) -> None:
    frame = envelope.message(seq, text.encode("utf-8", errors="surrogatepass"), False)
    assert frame.isascii()
    decoded = text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    assert json.loads(frame) == {"type": "message", "seq": seq, "data": decoded}


@given(seq=st.integers(min_value=0, max_value=2**63), data=st.binary())
def test_a_binary_message_reads_back_as_base64(seq: int, data: bytes) -> None:
    frame = envelope.message(seq, data, True)
    assert frame.isascii()
    body = json.loads(frame)
    assert body == {"type": "message", "seq": seq, "data_b64": base64.b64encode(data).decode()}
    assert base64.b64decode(body["data_b64"]) == data


def test_invalid_utf8_from_a_backend_becomes_replacement_characters() -> None:
    assert json.loads(envelope.message(1, b"ok \xff", False))["data"] == "ok \ufffd"


@given(cseq=st.integers(min_value=0, max_value=envelope.MAX_CSEQ), text=st.text())
def test_a_client_message_parses_to_its_sequence_and_bytes(cseq: int, text: str) -> None:
    frame = json.dumps({"type": "message", "cseq": cseq, "data": text})
    parsed = envelope.parse_client(frame)
    assert (parsed.cseq, parsed.binary) == (cseq, False)
    assert parsed.data == text.encode("utf-8", errors="surrogatepass")


@pytest.mark.parametrize(
    ("frame", "words"),
    [
        ("nope", "not JSON"),
        ('{"type": "hello"}', '"type": "message"'),
        ('{"type": "message", "cseq": -1, "data": "x"}', "non-negative"),
        ('{"type": "message", "cseq": true, "data": "x"}', "non-negative"),
        ('{"type": "message", "cseq": 9007199254740992, "data": "x"}', "integer below"),
        ('{"type": "message", "cseq": 18446744073709551616, "data": "x"}', "integer below"),
        ('{"type": "message", "cseq": 1e3, "data": "x"}', "non-negative"),
        ('{"type": "message", "data": 5}', '"data" must be a string'),
        ('{"type": "message", "data_b64": "***"}', "not base64"),
        ('{"type": "message", "data_b64": "\\u0080"}', "not base64"),  # found by fuzzing
        ('{"type": "message", "data_b64": 7}', "not base64"),
        ('{"type": "refresh", "token": 7}', 'needs "token"'),
        ('{"type": "message", "data": "\\ud800"}', "not valid Unicode"),
        ("[" * 60_000 + "]" * 60_000, "nested too deeply"),
    ],
)
def test_a_bad_client_frame_is_refused_with_what_is_wrong(frame: str, words: str) -> None:
    with pytest.raises(envelope.EnvelopeError, match=words):
        envelope.parse_client(frame)


def test_a_ping_is_recognised() -> None:
    assert envelope.parse_client('{"type": "ping"}').cseq < 0
