"""``load --outside-rounds``: the targets' order per round, the ratios of figures taken
in the same round and their median (benchmarks/load/rounds.py, pure)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.load import rounds


def outside(hs: float, cpu_ms: float, msgs: float, per_cpu: float) -> dict[str, Any]:
    return {
        "surge": {"handshakes_per_s": hs, "server_cpu_ms_per_handshake": cpu_ms},
        "echo": {"messages_per_s": msgs, "messages_per_cpu_s": per_cpu},
    }


def test_each_round_starts_with_another_target() -> None:
    names = ("a", "b", "c")
    assert [rounds.order(names, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_a_ratio_divides_figures_of_the_same_round_and_the_median_is_over_rounds() -> None:
    # the machine is twice as fast in round 2: each ratio holds, the figures do not
    runs = {
        "wsfleet raw": [outside(900, 0.8, 20_000, 19_000), outside(1800, 0.4, 40_000, 38_000)],
        "envoy+bare": [outside(1000, 0.6, 30_000, 29_000), outside(2000, 0.3, 60_000, 58_000)],
    }
    summary = rounds.summarize(runs)
    assert summary["rounds"] == 2
    hs = summary["ratios"]["wsfleet raw"]["handshakes_per_s"]
    assert hs["rounds"] == [pytest.approx(0.9), pytest.approx(0.9)]
    assert hs["median"] == pytest.approx(0.9)
    # CPU per handshake: the baseline's over ours, so that above 1 is better everywhere
    cpu = summary["ratios"]["wsfleet raw"]["server_cpu_ms_per_handshake"]
    assert cpu["median"] == pytest.approx(0.75)
    assert summary["targets"]["envoy+bare"]["handshakes_per_s"]["median"] == 1500
    # a ratio of the figures' medians would mix rounds; the median of ratios does not
    three = {
        "wsfleet raw": [outside(600, 1, 1, 1), outside(900, 1, 1, 1), outside(1400, 1, 1, 1)],
        "envoy+bare": [outside(1000, 1, 1, 1), outside(1000, 1, 1, 1), outside(1300, 1, 1, 1)],
    }
    ratios = rounds.summarize(three)["ratios"]["wsfleet raw"]["handshakes_per_s"]
    assert ratios["median"] == pytest.approx(0.9)
    assert (ratios["lowest"], ratios["highest"]) == (pytest.approx(0.6), pytest.approx(14 / 13))
    text = rounds.readable(rounds.summarize(three))
    assert "3 interleaved rounds" in text
    assert "wsfleet raw / envoy+bare" in text and "0.90x (0.60x-1.08x)" in text


def test_a_missing_figure_is_left_out_of_the_median_and_said() -> None:
    broken = outside(900, 0.8, 20_000, 19_000)
    del broken["echo"]["messages_per_s"]
    runs = {
        "wsfleet v1": [broken, outside(800, 0.9, 10_000, 9_000)],
        "envoy+bare": [outside(1000, 0.6, 30_000, 29_000), outside(1000, 0.6, 20_000, 19_000)],
    }
    echo = rounds.summarize(runs)["ratios"]["wsfleet v1"]["messages_per_s"]
    assert echo["rounds"] == [None, pytest.approx(0.5)]
    assert echo["median"] == pytest.approx(0.5)
    without_baseline = rounds.summarize({"wsfleet v1": [broken]})
    assert without_baseline["ratios"] == {}
    assert "n/a" in rounds.readable(without_baseline)


def test_every_surge_of_the_rounds_comes_from_an_address_of_its_own() -> None:
    addresses = {rounds.source_ip(r, t) for r in range(80) for t in range(len(rounds.TARGETS))}
    assert len(addresses) == 80 * len(rounds.TARGETS)
    assert all(a.startswith("127.0.1.") and 1 <= int(a.rsplit(".", 1)[1]) <= 254 for a in addresses)
    with pytest.raises(ValueError, match="no source address left"):
        rounds.source_ip(85, 0)


def test_each_targets_first_outside_surge_has_an_address_of_its_own_too() -> None:
    from benchmarks.load.scenarios import outside

    first = [outside.source_ip(i) for i in range(6)]
    assert first == [f"127.0.2.{n}" for n in range(1, 7)]
    assert not set(first) & {rounds.source_ip(r, t) for r in range(80) for t in range(3)}
    with pytest.raises(ValueError, match="no source address left"):
        outside.source_ip(254)
