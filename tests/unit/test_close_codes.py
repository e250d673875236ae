"""Close codes and the retry hint a close reason carries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.close_codes import (
    MAX_REASON_BYTES,
    CloseCode,
    backend_close,
    fit_reason,
    parse_retry_hint,
    retry_hint_reason,
)


def test_close_codes_have_their_rfc_6455_numbers() -> None:
    assert {code.name: int(code) for code in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "NO_STATUS": 1005,  # recorded, never sent (RFC 6455 section 7.4.1)
        "ABNORMAL": 1006,  # recorded, never sent
        "INVALID_PAYLOAD": 1007,
        "POLICY_VIOLATION": 1008,
        "MESSAGE_TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "TOKEN_EXPIRED": 4401,  # the private-use range (RFC 6455 section 7.4.2)
    }


def test_a_retry_hint_reads_reason_then_milliseconds() -> None:
    assert retry_hint_reason("drain", 1500) == "drain; retry_after_ms=1500"
    assert parse_retry_hint("drain; retry_after_ms=1500") == 1500


def test_a_hint_without_a_reason_is_the_hint_alone() -> None:
    assert retry_hint_reason("", 250) == "retry_after_ms=250"
    assert parse_retry_hint("retry_after_ms=250") == 250


def test_the_last_hint_wins_when_the_reason_text_holds_one_too() -> None:
    assert parse_retry_hint(retry_hint_reason("old retry_after_ms=9", 20)) == 20


def test_a_reason_without_a_hint_parses_to_none() -> None:
    assert parse_retry_hint("slow consumer") is None
    assert parse_retry_hint("") is None
    assert parse_retry_hint("retry_after_ms=soon") is None


def test_a_negative_retry_hint_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        retry_hint_reason("drain", -1)


def test_a_long_reason_is_cut_so_the_close_frame_stays_within_rfc_limits() -> None:
    reason = retry_hint_reason("x" * 500, 1500)
    assert len(reason.encode()) == MAX_REASON_BYTES
    assert reason.endswith("; retry_after_ms=1500")


def test_a_multibyte_reason_is_cut_on_a_character_boundary() -> None:
    hint = "; retry_after_ms=1500"  # 21 bytes: 102 left for the text, 51 "é" of 2 bytes
    assert retry_hint_reason("é" * 100, 1500) == "é" * 51 + hint
    assert retry_hint_reason("a" + "é" * 100, 1500) == "a" + "é" * 50 + hint  # 101 bytes


@given(st.text(), st.integers(min_value=0, max_value=10**12))
def test_any_reason_with_a_hint_fits_a_close_frame_and_parses_back(reason: str, ms: int) -> None:
    text = retry_hint_reason(reason, ms)
    assert len(text.encode()) <= MAX_REASON_BYTES
    assert parse_retry_hint(text) == ms


@pytest.mark.parametrize("code", [1000, 1001, 1008, 1011, 1012, 1013, 1014, 3000, 4001, 4999])
def test_a_backend_may_close_with_a_code_a_server_may_send(code: int) -> None:
    assert backend_close(code, "bye") == (code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1002, 1004, 1005, 1006, 1015, 2999, 5000, 70000])
def test_any_other_backend_code_becomes_1011_and_is_named_in_the_reason(code: int) -> None:
    sent, reason = backend_close(code, "bye")
    assert sent == 1011 and reason == f"backend sent close code {code}: bye"


@given(st.text())
def test_a_reason_is_cut_to_the_frame_on_a_character_boundary(reason: str) -> None:
    cut = fit_reason(reason)
    assert len(cut.encode()) <= MAX_REASON_BYTES
    assert reason.startswith(cut) or not reason
