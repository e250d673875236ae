"""Unit tests start no process and no socket: what needs Redis, a fleet, a subprocess or
a bound port lives in tests/integration. This reads every unit test file for the
fixtures and calls that start them."""

from __future__ import annotations

import re
from pathlib import Path

UNIT = Path(__file__).parent
STARTS_SOMETHING = re.compile(
    r"\b(redis_server|redis_cluster_url|fleet_factory|one_gateway|two_gateways)\b"
    r"|\bsubprocess\b|create_subprocess_exec|create_subprocess_shell"
    r"|socket\.socket\(|\.bind\(\(|start_server\(|TCPSite\(|add_insecure_port\("
)


def impure_lines(text: str) -> list[str]:
    """The lines of a test file that start a process or a socket (this file's patterns
    are written as regular expressions, so they do not match themselves)."""
    return [line.strip() for line in text.splitlines() if STARTS_SOMETHING.search(line)]


def test_the_check_finds_what_starts_a_process_or_a_socket() -> None:
    planted = "async def test_x(redis_server):\n    probe = socket.socket()\n    x = 1\n"
    assert impure_lines(planted) == ["async def test_x(redis_server):", "probe = socket.socket()"]
    assert impure_lines("def test_y(fake_clock):\n    assert 1 + 1 == 2\n") == []


def test_no_unit_test_starts_a_process_or_a_socket() -> None:
    found = {
        path.name: lines
        for path in sorted(UNIT.glob("*.py"))
        if path.name != Path(__file__).name and (lines := impure_lines(path.read_text()))
    }
    assert found == {}, f"move these to tests/integration: {found}"
