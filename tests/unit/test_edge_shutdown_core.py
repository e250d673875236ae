"""The Envoy pod's shutdown manager decides when its blocking /shutdown/ready answers: after
the control plane took the drain and reports it drained, at once when the control plane
refuses it, and never later than delist + budget + margin (a fake clock drives it)."""

from __future__ import annotations

import pytest

from wsfleet.settings_flags import SettingsError, from_args
from wsfleet_tools.cli import build_parser
from wsfleet_tools.edge_shutdown import (
    Asked,
    DrainTimes,
    EdgeShutdownSettings,
    ShutdownCore,
    Step,
    asked_from_status,
)

TIMES = DrainTimes(budget_s=60.0, delist_s=15.0, margin_s=10.0)


def test_it_asks_for_the_drain_then_watches_it_and_answers_once_drained() -> None:
    core = ShutdownCore(TIMES, started_at=100.0, poll_interval_s=1.0)
    assert core.decide(100.0) is Step.ASK
    core.asked(Asked.ACCEPTED)
    assert core.decide(101.0) is Step.POLL
    for state in ("delisting", "closing", None):  # None: the control plane did not say
        core.polled(state)
        assert core.decide(130.0) is Step.POLL
    core.polled("drained")
    assert core.decide(131.0) is Step.ANSWER
    assert core.outcome == "drained"
    assert core.decide(500.0) is Step.ANSWER and core.outcome == "drained"  # it stays


def test_an_unreachable_control_plane_is_asked_again_until_the_deadline() -> None:
    core = ShutdownCore(TIMES, started_at=100.0, poll_interval_s=1.0)
    deadline = 100.0 + 15.0 + 60.0 + 10.0
    assert core.deadline == deadline
    now = 100.0
    while now < deadline:
        assert core.decide(now) is Step.ASK, now
        core.asked(Asked.FAILED)
        now += core.pause_s(now)
    assert now == deadline  # the last pause ends on the deadline, not past it
    assert core.decide(now) is Step.ANSWER and core.outcome == "deadline"


def test_a_drain_that_never_finishes_is_answered_at_the_deadline() -> None:
    core = ShutdownCore(TIMES, started_at=0.0, poll_interval_s=2.0)
    core.asked(Asked.ACCEPTED)
    core.polled("closing")
    assert core.decide(TIMES.longest_s - 0.001) is Step.POLL
    assert core.pause_s(TIMES.longest_s - 0.5) == 0.5
    assert core.decide(TIMES.longest_s) is Step.ANSWER and core.outcome == "deadline"
    assert core.call_timeout_s(TIMES.longest_s - 1.0) == 1.0  # a call never outlives it


def test_a_refused_drain_is_answered_at_once() -> None:
    core = ShutdownCore(TIMES, started_at=0.0, poll_interval_s=1.0)
    core.asked(Asked.REFUSED)  # a wrong token or an unknown node: asking again is useless
    assert core.decide(0.0) is Step.ANSWER and core.outcome == "refused"


@pytest.mark.parametrize(
    ("status", "asked"),
    [
        (202, Asked.ACCEPTED),
        (409, Asked.ACCEPTED),  # a drain of this node is under way: watch it
        (401, Asked.REFUSED),
        (404, Asked.REFUSED),
        (502, Asked.FAILED),
        (503, Asked.FAILED),
    ],
)
def test_the_control_plane_answer_says_whether_to_ask_again(status: int, asked: Asked) -> None:
    assert asked_from_status(status) is asked


def test_the_budget_is_one_setting_read_from_the_environment() -> None:
    args = build_parser().parse_args(["edge-shutdown-manager"])
    environ = {
        "WSFLEET_ENVOY_NODE": "envoy-zone-a-5d8f9-abcde",
        "WSFLEET_CONTROL_PLANE": "http://xds-server:18001",
        "WSFLEET_ADMIN_TOKEN_FILE": "/etc/wsfleet/keys/admin.token",
        "WSFLEET_EDGE_DRAIN_BUDGET_S": "45",
        "WSFLEET_EDGE_DELIST_S": "5",
    }
    settings = from_args(EdgeShutdownSettings, args, environ=environ)
    assert (settings.edge_drain_budget_s, settings.edge_delist_s) == (45.0, 5.0)
    assert settings.envoy_node == "envoy-zone-a-5d8f9-abcde"
    with pytest.raises(SettingsError, match="WSFLEET_EDGE_DRAIN_BUDGET_S"):
        from_args(
            EdgeShutdownSettings, args, environ={**environ, "WSFLEET_EDGE_DRAIN_BUDGET_S": "0"}
        )
    with pytest.raises(SettingsError, match="--node"):
        from_args(EdgeShutdownSettings, args, environ={})
