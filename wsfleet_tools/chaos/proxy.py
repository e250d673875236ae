"""A user-space TCP fault proxy: clients -> proxy -> target, with :class:`Faults` applied
to both directions and changeable while connections live.

``wsfleet faultproxy --listen-port 9000 --target 127.0.0.1:8080 --loss 0.05 --latency-ms 100``
(loopback targets only; runs until SIGTERM or Ctrl-C) or, in tests and benchmarks,
``async with FaultProxy("127.0.0.1", target_port) as proxy: proxy.set(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from wsfleet.stop_signals import signal_events
from wsfleet_tools.chaos.faults import FaultPlan, Faults

log = structlog.get_logger()

CHUNK = 65536


@dataclass
class _Direction:
    plan: FaultPlan
    queue: asyncio.Queue[tuple[float, bytes] | None] = field(default_factory=asyncio.Queue)
    held: list[bytes] = field(default_factory=list)  # blackholed: never delivered


class FaultProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        faults: Faults | None = None,
        seed: int | None = None,
    ) -> None:
        self._target = (target_host, target_port)
        self._listen = (listen_host, listen_port)
        self._faults = faults or Faults()
        self._rng = random.Random(seed)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._plans: list[FaultPlan] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0

    @property
    def target(self) -> tuple[str, int]:
        return self._target

    @property
    def faults(self) -> Faults:
        return self._faults

    def set(self, faults: Faults) -> None:
        """Apply new faults to every connection, live ones included."""
        self._faults = faults
        for plan in self._plans:
            plan.faults = faults

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, *self._listen, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection(*self._target)
        except OSError:
            client_writer.close()
            return
        self.connections += 1
        self._writers.update((client_writer, target_writer))
        for reader, writer in ((client_reader, target_writer), (target_reader, client_writer)):
            plan = FaultPlan(self._faults, random.Random(self._rng.random()))
            self._plans.append(plan)
            direction = _Direction(plan)
            self._spawn(self._read(reader, direction))
            self._spawn(self._write(writer, direction))

    async def _read(self, reader: asyncio.StreamReader, direction: _Direction) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(CHUNK):
                at = direction.plan.deliver_at(loop.time())
                if at is None:
                    direction.held.append(chunk)  # blackholed
                else:
                    direction.queue.put_nowait((at, chunk))
        except (ConnectionError, OSError):
            pass
        finally:
            direction.queue.put_nowait(None)
            self._plans = [plan for plan in self._plans if plan is not direction.plan]

    async def _write(self, writer: asyncio.StreamWriter, direction: _Direction) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await direction.queue.get()) is not None:
                at, chunk = item
                if (wait := at - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


async def serve_until_stopped(proxy: FaultProxy) -> None:
    """Run ``proxy`` until SIGTERM or SIGINT, then close every connection it holds."""
    stopped, _ = signal_events()
    async with proxy:
        print(
            f"fault proxy on 127.0.0.1:{proxy.port} -> {proxy.target[0]}:{proxy.target[1]}"
            f" ({proxy.faults})",
            flush=True,
        )
        await stopped.wait()
