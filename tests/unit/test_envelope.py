"""Protocol v1 envelopes: what the gateway writes reads back exactly; bad frames are named."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core import envelope
from sidecar.core.channel_frames import Refused


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


def _read_by_json(text: str) -> object:
    """What the JSON parser makes of a frame: its result, or its error's text."""
    try:
        return envelope.parse_client_json(text)
    except (ValueError, Refused) as error:
        return f"{type(error).__name__}: {error}"


def _read(text: str) -> object:
    try:
        return envelope.parse_client(text)
    except (ValueError, Refused) as error:
        return f"{type(error).__name__}: {error}"


_SPACING = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "])
_CSEQS = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**60),  # beyond MAX_CSEQ too
    st.sampled_from(["01", "-0", "1.0", "1e3", "true", '"7"']),
)


@given(
    cseq=_CSEQS,
    data=st.text(),
    spaces=st.lists(_SPACING, min_size=16, max_size=16),
    ensure_ascii=st.booleans(),
)
def test_the_usual_frame_reads_as_the_json_parser_reads_it(
    cseq: int | str | None, data: str, spaces: list[str], ensure_ascii: bool
) -> None:
    """The SDKs' frame (type, cseq, data) is read without a JSON parse when its data has
    no escape: any spacing, any cseq and any data read exactly as json.loads reads them."""
    s = iter(spaces)
    quoted = json.dumps(data, ensure_ascii=ensure_ascii)
    head = f'{next(s)}{{{next(s)}"type"{next(s)}:{next(s)}"message"{next(s)},{next(s)}'
    numbered = "" if cseq is None else f'"cseq"{next(s)}:{next(s)}{cseq}{next(s)},{next(s)}'
    text = f'{head}{numbered}"data"{next(s)}:{next(s)}{quoted}{next(s)}}}{next(s)}'
    assert _read(text) == _read_by_json(text)
    unescaped = "\\" not in quoted
    numbered_plainly = cseq is None or (isinstance(cseq, int) and cseq <= envelope.MAX_CSEQ)
    if unescaped and numbered_plainly:  # read without the parser (a cseq past it: with)
        assert envelope._PLAIN_MESSAGE.fullmatch(text) is not None


@given(text=st.text(alphabet='{}":, \t\\u01aeyptdcsqmg\x00\x1f\ud800', max_size=60))
def test_any_text_reads_as_the_json_parser_reads_it(text: str) -> None:
    assert _read(text) == _read_by_json(text)


def test_a_frame_with_a_lone_surrogate_takes_the_named_error() -> None:
    text = '{"type":"message","data":"a\ud800"}'
    assert _read(text) == _read_by_json(text)
    assert "not valid Unicode" in str(_read(text))
