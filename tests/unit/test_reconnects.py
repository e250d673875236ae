"""The reconnect-burst measure shared by the chaos tests and the chaos benchmark."""

from __future__ import annotations

from wsfleet_tools.chaos.reconnects import peak_to_mean


def test_an_even_spread_is_about_one() -> None:
    times = [n * 0.01 for n in range(1000)]  # 10 per 100 ms for 10 s
    assert 0.9 <= peak_to_mean(times) <= 1.2


def test_a_burst_is_its_peak_over_the_mean_of_the_window() -> None:
    burst = [5.0 + n * 0.0001 for n in range(500)]  # 500 in one bucket
    rest = [n * 0.01 for n in range(500)]  # 10 per 100 ms over 5 s
    assert peak_to_mean(burst + rest) > 8


def test_stragglers_far_behind_do_not_make_a_burst_look_spread() -> None:
    burst = [n * 0.001 for n in range(100)]  # 100 within 100 ms
    stragglers = [60.0, 120.0]
    assert peak_to_mean(burst + stragglers) >= 0.9 * peak_to_mean(burst)


def test_too_few_to_measure_is_even() -> None:
    assert peak_to_mean([]) == peak_to_mean([1.0]) == 1.0
