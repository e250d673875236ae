"""Outside client (``--client picows``): the surge and the echo again, measured by an
independent client (benchmarks/outside_client.py: picows, one process on the client
core). The surge: ``--connections`` handshakes, ``--outside-in-flight`` at a time (256);
the echo: ``--outside-echo-connections`` of them (64), ``--outside-echo-depth`` messages in
flight each (16), until ``--outside-echo-messages`` each have come back. Every target gets
the same requests (path, query, token). The report sets these figures beside the load
generators' (benchmarks/load/compare.py says why they differ)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from benchmarks import processes
from benchmarks.load import generators
from benchmarks.load.targets import Placement, Target
from benchmarks.report import MIN_CPU_S, per, summary

SOURCE_IP = "127.0.0.254"  # the load generators use 127.0.0.2 .. .251
LOADGEN_SOURCE_IP = "127.0.0.2"  # load generator 0's
MESSAGE_BYTES = 64
WHO = "outside client"
CAPTURE_TIMEOUT_S = 10.0


def source_ip(target_index: int) -> str:
    """The outside surge's source address for the run's ``target_index``-th target, in
    127.0.2.0/24: each surge from an address of its own, so that none meets what an
    earlier one left behind. (Surges to the same target from one address do: the ports
    the earlier one left in TIME_WAIT make the kernel search for a free port at every
    connect, the client's core saturates with that search, and the surge runs at a third
    of its rate with the server idle; ``--outside-rounds`` measured so at first.)"""
    if not 0 <= target_index < 254:
        raise ValueError(f"target {target_index}: no source address left in 127.0.2.0/24")
    return f"127.0.2.{target_index + 1}"


def _argv(
    url: str,
    count: int,
    in_flight: int,
    key_file: Path,
    v1: bool,
    max_s: float,
    source_ip: str = SOURCE_IP,
) -> list[str]:
    argv = [
        *(sys.executable, "-m", "benchmarks.outside_client", "--url", url),
        *("--count", str(count), "--in-flight", str(in_flight), "--key-file", str(key_file)),
        *("--source-ip", source_ip, "--deadline-s", str(max_s)),
        *("--handshake-timeout", str(min(30.0, max_s)), "--idle-s", str(4 * max_s + 60)),
    ]
    return [*argv, "--v1"] if v1 else argv


async def _finish(client: asyncio.subprocess.Process) -> None:
    if client.returncode is None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await generators.send(client, cmd="close")
    await processes.finish(client, 30)


async def run(
    target: Target, args: argparse.Namespace, placement: Placement, source_ip: str
) -> dict[str, Any]:
    """The surge, then the echo, from one picows process connecting from ``source_ip``."""
    bound = args.max_seconds + 30
    client = await processes.spawn(
        *_argv(
            target.url,
            args.connections,
            args.outside_in_flight,
            target.key_file,
            target.v1,
            args.max_seconds,
            source_ip,
        ),
        cores=placement.clients,
    )
    try:
        # it starts up (and mints its tokens) while the connections before are closed
        await asyncio.sleep(args.settle)
        await generators.read_event(client, "ready", {}, 0, bound, WHO)
        cores = {"clients": placement.clients, "servers": placement.servers}
        core_clock = {side: generators.core_times(c) for side, c in cores.items()}
        before = generators.usage(target.processes)
        await generators.send(client, cmd="surge")
        surge = await generators.read_event(client, "surge", {}, 0, bound, WHO)
        after_surge = generators.usage(target.processes)
        cores_busy = {
            side: generators.core_busy(core_clock[side], generators.core_times(c))
            for side, c in cores.items()
        }
        await generators.send(
            client,
            cmd="echo",
            connections=args.outside_echo_connections,
            depth=args.outside_echo_depth,
            messages=args.outside_echo_messages,
            size=MESSAGE_BYTES,
            max_seconds=args.max_seconds,
        )
        echo = await generators.read_event(client, "echo", {}, 0, bound, WHO)
        after_echo = generators.usage(target.processes)
        affinity = processes.affinity(client.pid)
    finally:
        await _finish(client)
    surge_cpu = generators.cpu_spent(after_surge, before)
    echo_cpu = generators.cpu_spent(after_echo, after_surge)
    opened, seconds = surge["opened"], surge["seconds"]
    return {
        "client": "picows",
        "affinity": affinity,
        "surge": {
            "requested": args.connections,
            "in_flight": args.outside_in_flight,
            "success": opened / args.connections,
            "handshakes_per_s": per(opened, seconds),
            "latency_s": summary(surge["handshake_s"]),
            "errors": surge["errors"],
            "client_cores_busy": surge["cpu_s"] / (seconds * placement.client_cores),
            "cores_busy_all_processes": cores_busy,
            "server_cpu_s": surge_cpu,
            "server_cores_busy": surge_cpu / (seconds * placement.server_cores),
            "server_cpu_ms_per_handshake": per(surge_cpu * 1000, opened, 1),
            "server_cpu_ms_per_handshake_by_process": generators.cpu_by_role(
                after_surge, before, opened, 1000
            ),
        },
        "echo": {
            "connections": min(args.outside_echo_connections, opened),
            "in_flight": min(args.outside_echo_connections, opened) * args.outside_echo_depth,
            "sent": echo["sent"],
            "received": echo["received"],
            "seconds": echo["seconds"],
            "messages_per_s": per(echo["received"], echo["seconds"]),
            "rtt_s": echo["rtt_s"],
            "client_cores_busy": echo["cpu_s"] / (echo["seconds"] * placement.client_cores),
            "server_cpu_s": echo_cpu,
            "messages_per_cpu_s": per(echo["received"], echo_cpu, MIN_CPU_S),
            "server_cpu_us_per_message_by_process": generators.cpu_by_role(
                after_echo, after_surge, echo["received"], 1e6
            ),
        },
    }


async def request_bytes(key_file: Path, placement: Placement) -> dict[str, int]:
    """The size of one upgrade request from each client (a raw row's, token included), read
    by a socket that answers nothing: what every target receives per handshake."""
    sizes: dict[str, int] = {}  # the client's source address -> its request's bytes

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CAPTURE_TIMEOUT_S)
            sizes[writer.get_extra_info("peername")[0]] = len(head)
        writer.close()

    server = await asyncio.start_server(capture, "127.0.0.1", 0)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
    try:
        await asyncio.gather(
            _loadgen_request(url, key_file, placement), _picows_request(url, key_file, placement)
        )
    finally:
        server.close()
        await server.wait_closed()
    found = {"loadgen": sizes.get(LOADGEN_SOURCE_IP), "picows": sizes.get(SOURCE_IP)}
    missing = [client for client, size in found.items() if size is None]
    if missing:
        raise RuntimeError(f"no upgrade request arrived from {', '.join(missing)}")
    return {client: size for client, size in found.items() if size is not None}


async def _loadgen_request(url: str, key_file: Path, placement: Placement) -> None:
    """One handshake of a load generator (index 0: from LOADGEN_SOURCE_IP)."""
    fake = Target("capture", url, {}, key_file)
    loadgen = await generators.spawn(fake, 1, 0.0, 0, cores=placement.clients, max_seconds=5)
    try:
        await generators.read_event(loadgen, "connected", {}, 0, CAPTURE_TIMEOUT_S)
    finally:
        await generators.close([loadgen])


async def _picows_request(url: str, key_file: Path, placement: Placement) -> None:
    client = await processes.spawn(*_argv(url, 1, 1, key_file, False, 5.0), cores=placement.clients)
    try:
        await generators.read_event(client, "ready", {}, 0, CAPTURE_TIMEOUT_S, WHO)
        await generators.send(client, cmd="surge")
        await generators.read_event(client, "surge", {}, 0, CAPTURE_TIMEOUT_S, WHO)
    finally:
        await _finish(client)
