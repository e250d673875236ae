"""Progress output: redrawn on a terminal, a line per 10 % or per 5 s elsewhere."""

from __future__ import annotations

from wsfleet_tools.progress import ProgressLines


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_every_update_redrawn_in_place() -> None:
    lines = ProgressLines(tty=True, clock=FakeClock())
    assert all(lines.due(done, 100) for done in range(100))
    assert lines.render("x") == "\rx"


def test_a_log_gets_a_line_per_tenth_of_the_work() -> None:
    clock = FakeClock()
    lines = ProgressLines(tty=False, clock=clock)
    shown = []
    for done in range(0, 1001):
        clock.now += 0.001  # fast: time never forces a line
        if lines.due(done, 1000):
            shown.append(done)
    assert shown == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    assert lines.render("x") == "x\n"


def test_a_log_gets_a_line_every_5_s_while_nothing_moves() -> None:
    clock = FakeClock()
    lines = ProgressLines(tty=False, clock=clock)
    shown = []
    for tick in range(41):  # 20 s in half-second polls, stuck at 3 of 100
        clock.now = tick * 0.5
        if lines.due(3, 100):
            shown.append(clock.now)
    assert shown == [0.0, 5.0, 10.0, 15.0, 20.0]


def test_nothing_to_do_is_shown_once() -> None:
    lines = ProgressLines(tty=False, clock=FakeClock())
    assert lines.due(0, 0) and not lines.due(0, 0)
