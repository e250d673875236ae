"""`wsfleet faultproxy`: the fault proxy as a command, before a real loopback TCP server."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.integration


async def _echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def _proxy(*flags: str) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsfleet_tools", "faultproxy", *flags, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = re.search(r"on 127\.0\.0\.1:(\d+) ->", line)
    assert match, line
    return process, int(match.group(1))


async def _round_trip(port: int, payload: bytes) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    got = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    elapsed = time.monotonic() - started
    writer.close()
    assert got == payload
    return elapsed


async def test_it_delays_both_ways_and_stops_cleanly_on_sigterm() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    process, proxy_port = await _proxy("--target", f"127.0.0.1:{port}", "--latency-ms", "150")
    try:
        elapsed = await _round_trip(proxy_port, b"hello through a slow network")
        assert 0.3 <= elapsed < 2.0  # 150 ms each way
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        server.close()
    with pytest.raises(OSError):  # the proxy's port is free: nothing listens any more
        await asyncio.open_connection("127.0.0.1", proxy_port)


async def test_a_blackholed_path_keeps_the_socket_open_and_delivers_nothing() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    process, proxy_port = await _proxy("--target", f"127.0.0.1:{port}", "--blackhole")
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
        writer.write(b"anyone there?")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 1.0)
        assert not reader.at_eof()
        writer.close()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 10)
        server.close()


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--target", "192.0.2.1:80"], "on loopback"),
        (["--target", "127.0.0.1:99999"], "port must be 0-65535"),
        (["--target", "127.0.0.1:80", "--loss", "1.5"], "must be below 1"),
        (["--target", "127.0.0.1:80", "--latency-ms", "-1"], "is negative"),
    ],
)
def test_bad_flags_are_refused_with_the_reason(flags: list[str], complaint: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsfleet_tools", "faultproxy", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert complaint in result.stderr
