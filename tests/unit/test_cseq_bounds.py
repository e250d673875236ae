"""A client's ``cseq`` is persisted, sent to the backend as a uint64 and echoed to JS
clients in the welcome: one beyond 2**53 - 1 is a bad frame (notice, then the bad-frame
budget's 1007), never recorded, so the session's later messages still go through."""

from __future__ import annotations

import json

import pytest

from sidecar.core import envelope
from sidecar.core.close_codes import CloseCode
from sidecar.core.resume import Sequencer
from sidecar.core.session import BAD_FRAME_BURST, QueueBounds, SessionCore, SessionCounters

BOUNDS = QueueBounds(messages=100, bytes=1_000_000, slow_consumer_grace_s=5.0)


def v1() -> SessionCore:
    return SessionCore("s1", Sequencer(), SessionCounters(), BOUNDS, None)


def message(cseq: int) -> bytes:
    return json.dumps({"type": "message", "cseq": cseq, "data": "x"}).encode()


def notices(core: SessionCore) -> list[str]:
    out = []
    while (frame := core.next_frame()) is not None:
        out.append(json.loads(frame.data)["reason"])
    return out


def test_the_highest_cseq_is_what_a_javascript_number_holds() -> None:
    assert envelope.MAX_CSEQ == 2**53 - 1
    core = v1()
    forwarded = core.client_frame(message(envelope.MAX_CSEQ), False, 0.0)
    assert isinstance(forwarded, envelope.ClientMessage)
    assert forwarded.cseq == envelope.MAX_CSEQ


@pytest.mark.parametrize("cseq", [2**53, 2**63, 2**64, 2**64 + 1, 10**30])
def test_a_cseq_beyond_the_bound_is_a_bad_frame_and_is_not_recorded(cseq: int) -> None:
    core = v1()
    assert core.client_frame(message(5), False, 0.0) is not None
    assert core.client_frame(message(cseq), False, 0.0) is None
    assert [n.split(":")[0] for n in notices(core)] == ["bad_frame"]
    assert core.sequencer is not None and core.sequencer.last_cseq == 5
    # the session goes on: its next numbered message is not taken for a duplicate
    forwarded = core.client_frame(message(6), False, 0.0)
    assert isinstance(forwarded, envelope.ClientMessage) and forwarded.cseq == 6
    assert core.closing is None


def test_cseqs_beyond_the_bound_spend_the_bad_frame_budget_then_close_1007() -> None:
    core = v1()
    for _ in range(int(BAD_FRAME_BURST)):
        assert core.client_frame(message(2**64), False, 0.0) is None
    assert core.closing is None
    core.client_frame(message(2**64), False, 0.0)
    assert core.closing == (CloseCode.INVALID_PAYLOAD, "too many bad frames")
