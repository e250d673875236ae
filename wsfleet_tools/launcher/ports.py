"""Loopback ports: find free ones, check chosen ones.

A port found free is only free until someone binds it. The kernel hands out ports
from its ephemeral range (``net.ipv4.ip_local_port_range``) to every ``bind(0)`` and
every outgoing connection, so a port picked from that range can be taken by a
process's outgoing connection (to Redis, say) before the process meant to listen on it
starts. :func:`free_port` therefore picks below that range, where only an explicit
bind takes a port, and never hands out the same port twice in one process.

Processes that pick ports side by side (test workers) keep apart with
``WSFLEET_PORT_SHARE=i/n``: this process picks only ports ``p`` with ``p % n == i``.
"""

from __future__ import annotations

import errno
import os
import random
import socket
from pathlib import Path

from wsfleet.errors import StartupError

_LOWEST = 10_000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
SHARE_VARIABLE = "WSFLEET_PORT_SHARE"
_handed_out: set[int] = set()


def _share() -> tuple[int, int]:
    """(i, n) from ``WSFLEET_PORT_SHARE=i/n``; (0, 1): every port."""
    index, _, count = os.environ.get(SHARE_VARIABLE, "0/1").partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        return 0, 1
    return (i, n) if 0 <= i < n else (0, 1)


def _below_ephemeral(headroom: int = 0) -> range:
    """Ports that stay below the kernel's ephemeral range with ``headroom`` added, of this
    process's share (empty when the range cannot be read or leaves too little room: then
    the kernel picks)."""
    try:
        low = int(_RANGE_FILE.read_text().split()[0]) - headroom
    except (OSError, ValueError, IndexError):
        return range(0)
    index, count = _share()
    start = _LOWEST + (index - _LOWEST) % count
    return range(start, low, count) if low - _LOWEST >= 1_000 * count else range(0)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1", companion_offset: int = 0) -> int:
    """A port that was free a moment ago and that the kernel will not hand to an
    outgoing connection or a ``bind(0)`` meanwhile (see the module's docstring).

    With ``companion_offset``, port + offset is free and out of the ephemeral range
    too (a Redis Cluster node listens on its port and on port + 10000, its bus)."""
    candidates = _below_ephemeral(companion_offset)
    for _ in range(200 if candidates else 0):
        port = random.choice(candidates)
        ports = {port, port + companion_offset}
        if ports.isdisjoint(_handed_out) and all(_bindable(host, p) for p in ports):
            _handed_out.update(ports)
            return port
    if companion_offset:
        raise StartupError(f"no free port pair {companion_offset} apart below the ephemeral range")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        chosen: int = probe.getsockname()[1]
    _handed_out.add(chosen)
    return chosen


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Raise a clear :class:`StartupError` if ``host:port`` cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{what} port {port} is already in use on {host}") from None
            raise StartupError(f"cannot use {what} port {port} on {host}: {exc.strerror}") from None


def port_is_listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
