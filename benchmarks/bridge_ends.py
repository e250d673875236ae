"""The two ends of ``bridge-writes``, each a process of its own on uvloop.

``python -m benchmarks.bridge_ends serve --transport grpc|stream [--ready-file F]`` echoes
every message it reads:

- ``grpc``: one bidirectional gRPC stream per client (grpc.aio, as the gateway and the
  backend kit speak the bridge), the messages as bytes (no protobuf: both transports carry
  the same bytes);
- ``stream``: a plain asyncio TCP stream, each message behind its 4-byte length.

``python -m benchmarks.bridge_ends write --transport T --port P --rate R --count N --size B``
opens one stream, writes ``N`` messages of ``B`` bytes at ``R`` a second (each as the
bridge's writer writes a batch: one write, awaited) while a reader takes the echoes, and
prints one JSON line: ``{"written", "echoed", "seconds", "cpu_s"}`` (this process's CPU).
Bounded by the count and by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import uvloop

from wsfleet.readiness import write_ready

SERVICE, METHOD = "bench.Bridge", "Echo"
LENGTH = struct.Struct("!I")
MAX_MESSAGE_BYTES = 1 << 20  # the echo refuses anything larger (a bound, not a limit met)


async def _grpc_echo(messages: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for message in messages:
        yield message


async def serve_grpc() -> tuple[int, Any]:
    server = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(_grpc_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()

    async def stop() -> None:
        await server.stop(1.0)

    return port, stop


async def _stream_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
            if size > MAX_MESSAGE_BYTES:
                return
            writer.write(LENGTH.pack(size) + await reader.readexactly(size))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve_stream() -> tuple[int, Any]:
    server = await asyncio.start_server(_stream_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    return port, stop


async def main(transport: str, ready_file: Path | None) -> None:
    port, stop_server = await (serve_grpc() if transport == "grpc" else serve_stream())
    write_ready(ready_file, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await stop_server()


Write = Callable[[bytes], Awaitable[None]]


class Echoes:
    """The echoes read so far; ``all_in`` is set once ``expected`` have come."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.all_in = asyncio.Event()

    def one(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.all_in.set()


async def _paced(write: Write, args: argparse.Namespace, echoes: Echoes) -> None:
    """``--count`` writes at ``--rate``/s, then the echoes awaited (all bounded)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + args.max_seconds
    message = b"m" * args.size
    cpu_started, clock_started = time.process_time(), time.perf_counter()
    written = 0
    for n in range(args.count):
        due = started + n / args.rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        if loop.time() > deadline:
            break
        await write(message)
        written += 1
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(echoes.all_in.wait(), max(0.0, deadline - loop.time()))
    print(
        json.dumps(
            {
                "written": written,
                "echoed": echoes.count,
                "seconds": time.perf_counter() - clock_started,
                "cpu_s": time.process_time() - cpu_started,
            }
        ),
        flush=True,
    )


async def write_grpc(args: argparse.Namespace) -> None:
    echoes = Echoes(args.count)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 10.0)
        call = channel.stream_stream(f"/{SERVICE}/{METHOD}")()

        async def read() -> None:
            while await call.read() is not grpc.aio.EOF:
                echoes.one()

        reader = asyncio.create_task(read())
        await _paced(call.write, args, echoes)
        await call.done_writing()
        with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
            await asyncio.wait_for(reader, 5.0)


async def write_stream(args: argparse.Namespace) -> None:
    echoes = Echoes(args.count)
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)

    async def read() -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
                await reader.readexactly(size)
                echoes.one()

    async def write(message: bytes) -> None:
        writer.write(LENGTH.pack(len(message)) + message)
        await writer.drain()

    reading = asyncio.create_task(read())
    await _paced(write, args, echoes)
    writer.close()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reading, 5.0)


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("serve", "write"))
    parser.add_argument("--transport", choices=("grpc", "stream"), required=True)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    if args.role == "serve":
        uvloop.run(main(args.transport, args.ready_file))
    else:
        uvloop.run(write_grpc(args) if args.transport == "grpc" else write_stream(args))


if __name__ == "__main__":
    run()
