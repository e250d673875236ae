"""free_port picks ports the kernel will not hand to anyone else meanwhile."""

from __future__ import annotations

import socket

import pytest

from wsfleet.errors import StartupError
from wsfleet_tools.launcher import ports

pytestmark = pytest.mark.integration


def _ephemeral_low() -> int:
    return int(ports._RANGE_FILE.read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    chosen = [ports.free_port() for _ in range(200)]
    assert len(set(chosen)) == len(chosen)
    assert all(ports._LOWEST <= port < _ephemeral_low() for port in chosen)


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports, "_below_ephemeral", lambda headroom=0: range(busy, busy + 1))
        monkeypatch.setattr(ports, "_handed_out", set())
        assert ports.free_port() != busy  # the only candidate is taken: the kernel picks


def test_without_room_below_the_range_the_kernel_picks(monkeypatch, tmp_path) -> None:
    narrow = tmp_path / "range"
    narrow.write_text("10500\t60999\n")
    monkeypatch.setattr(ports, "_RANGE_FILE", narrow)
    assert ports._below_ephemeral() == range(0)
    port = ports.free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free, as promised


def test_a_port_with_a_companion_has_both_free_and_below_the_ephemeral_range() -> None:
    for _ in range(50):
        port = ports.free_port(companion_offset=10_000)
        assert port + 10_000 < _ephemeral_low()
        assert {port, port + 10_000} <= ports._handed_out


def test_a_port_whose_companion_is_taken_is_not_handed_out(monkeypatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = busy - 7 if ports._bindable("127.0.0.1", busy - 7) else busy - 11
        monkeypatch.setattr(ports, "_below_ephemeral", lambda headroom=0: range(free, free + 1))
        monkeypatch.setattr(ports, "_handed_out", set())
        # the only candidate is free, but its companion (the port taken) is not
        with pytest.raises(StartupError, match="no free port pair"):
            ports.free_port(companion_offset=busy - free)


def test_processes_given_shares_pick_apart(monkeypatch) -> None:
    monkeypatch.setenv(ports.SHARE_VARIABLE, "1/3")
    chosen = [ports.free_port() for _ in range(50)]
    assert all(port % 3 == 1 for port in chosen)
    monkeypatch.setenv(ports.SHARE_VARIABLE, "7/3")  # nonsense: every port again
    assert ports._below_ephemeral().step == 1
