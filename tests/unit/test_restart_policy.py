"""The launcher's restart backoff (doubling to a cap, reset after a good run, crash loops)
and the command line a restarted child gets (the ports it had)."""

from __future__ import annotations

import pytest

from wsfleet_tools.launcher.children import PORT_FLAGS, pinned_argv
from wsfleet_tools.launcher.restart_policy import RestartPolicy, RestartSettings

NO_JITTER = RestartSettings(jitter=0.0)


def _crash_repeatedly(policy: RestartPolicy, times: int, ran_s: float = 0.1) -> list[float]:
    """Start, run ``ran_s``, die, wait the decided delay; ``times`` over. Returns delays."""
    now, delays = 1000.0, []
    for _ in range(times):
        policy.started(now)
        now += ran_s
        decision = policy.exited(now)
        delays.append(decision.delay_s)
        now += decision.delay_s
    return delays


def test_the_delay_doubles_from_half_a_second_up_to_the_cap() -> None:
    delays = _crash_repeatedly(RestartPolicy(NO_JITTER), 9)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_child_that_ran_long_enough_starts_its_backoff_over() -> None:
    policy = RestartPolicy(NO_JITTER)
    _crash_repeatedly(policy, 4)  # next delay would be 8 s
    policy.started(5000.0)
    decision = policy.exited(5000.0 + 60.0)
    assert decision.delay_s == 0.5
    assert decision.ran_s == 60.0


def test_a_child_that_dies_just_before_the_reset_keeps_backing_off() -> None:
    policy = RestartPolicy(NO_JITTER)
    _crash_repeatedly(policy, 4)
    policy.started(5000.0)
    assert policy.exited(5000.0 + 59.0).delay_s == 8.0


def test_five_quick_exits_within_a_minute_are_a_crash_loop_and_are_still_retried() -> None:
    policy = RestartPolicy(NO_JITTER)
    now = 0.0
    looping = []
    for _ in range(7):
        policy.started(now)
        now += 0.1
        decision = policy.exited(now)
        looping.append((decision.exits_in_window, decision.crash_looping))
        assert decision.delay_s > 0  # never given up
        now += decision.delay_s
    # exits at 0.1, 0.7, 1.8, 3.9, 8.0, 16.1, 32.2 s: all within 60 s of each other
    assert looping == [(exits, exits >= 5) for exits in range(1, 8)]


def test_exits_older_than_the_window_no_longer_count() -> None:
    settings = RestartSettings(jitter=0.0, crash_loop_restarts=3, crash_loop_window_s=10.0)
    policy = RestartPolicy(settings)
    for at in (0.0, 1.0):
        policy.started(at)
        policy.exited(at + 0.1)
    policy.started(20.0)
    decision = policy.exited(20.1)  # the two earlier exits are more than 10 s old
    assert (decision.exits_in_window, decision.crash_looping) == (1, False)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 0.8), (0.5, 1.0), (1.0, 1.2)])
def test_jitter_spreads_each_delay_by_twenty_percent(rand: float, expected: float) -> None:
    policy = RestartPolicy(rand=lambda: rand)
    _crash_repeatedly(policy, 1)
    policy.started(2000.0)
    assert policy.exited(2000.1).delay_s == pytest.approx(expected)  # 1 s, jittered


def test_jitter_never_pushes_a_delay_above_the_cap() -> None:
    delays = _crash_repeatedly(RestartPolicy(rand=lambda: 1.0), 10)
    assert max(delays) == 30.0


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_backoff_s": 0.0},
        {"initial_backoff_s": 40.0},
        {"crash_loop_restarts": 0},
        {"jitter": 1.0},
    ],
)
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartSettings(**bad)  # type: ignore[arg-type]


def test_a_restart_asks_again_for_the_ports_the_child_bound() -> None:
    argv = ["python", "-m", "wsfleet_tools", "xds", "--grpc-port", "0", "--admin-port", "8081"]
    facts = {"grpc_port": 40123, "admin_port": 8081, "pod_id": "x"}
    assert pinned_argv(argv, facts, PORT_FLAGS) == [
        *("python", "-m", "wsfleet_tools", "xds"),
        *("--grpc-port", "40123", "--admin-port", "8081"),
    ]


def test_a_port_flag_the_command_line_lacks_is_appended() -> None:
    argv = ["wsfleet", "sidecar", "--pod-id", "sidecar-2", "--ready-file", "r.json"]
    pinned = pinned_argv(argv, {"port": 41000, "admin_port": 41001}, PORT_FLAGS)
    assert pinned == [*argv, "--port", "41000", "--admin-port", "41001"]
    assert argv[-1] == "r.json"  # the original is left alone
