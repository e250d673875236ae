"""How the Envoy chaos benchmark attributes reconnect attempts to each Envoy's turn."""

from benchmarks.envoy_chaos import bins, drain_figures, drain_windows

TIMELINE = [
    (10.0, "envoy", "draining"),
    (20.0, "envoy", "restarting"),
    (21.0, "envoy", "syncing"),
    (22.0, "envoy-2", "draining"),
    (32.0, "envoy-2", "restarting"),
    (33.5, "envoy-2", "syncing"),
    (34.0, "", "done"),
]


def test_a_turn_lasts_from_the_drain_until_the_next_envoys() -> None:
    assert drain_windows(TIMELINE) == [("envoy", 10.0, 22.0), ("envoy-2", 22.0, 34.0)]


def test_a_reconnect_just_after_the_restart_began_counts_for_that_envoy() -> None:
    # the last client closed at the end of the drain reconnects 0.3 s after `restarting`
    attempts = [12.0, 15.0, 19.9, 20.3, 25.0, 33.0]
    figures = [drain_figures(attempts, e, s, end, 10.0) for e, s, end in drain_windows(TIMELINE)]
    assert [f["attempts"] for f in figures] == [4, 2]
    assert sum(f["attempts"] for f in figures) == len(attempts)


def test_a_rollout_cut_short_leaves_the_open_turn_out() -> None:
    assert drain_windows(TIMELINE[:3]) == []
    assert drain_windows([*TIMELINE[:4], (23.0, "envoy-2", "failed")]) == [("envoy", 10.0, 22.0)]


def test_bins_count_each_time_once_in_its_half_second() -> None:
    assert bins([0.0, 0.49, 0.5, 1.2, 5.0], 0.0, 1.5) == [2, 1, 1]
