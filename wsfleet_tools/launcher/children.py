"""Child processes of the launcher: started, logged, stopped, never orphaned.

Each child runs in its own session (Ctrl-C reaches only the launcher, which
stops children in order) and is asked by the kernel to die with its parent
(``PR_SET_PDEATHSIG``) so even a killed launcher leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

log = structlog.get_logger()

LineSink = Callable[[str, str], None]  # (child name, line)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child:
    """One running child process and the task copying its output."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path):
        self.name = name
        self.process = process
        self.log_path = log_path
        self.expected_exit = False
        self._pump: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> int:
        """Signal, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        self.expected_exit = True
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout_s)
            except TimeoutError:
                log.warning("child_killed", child=self.name, after_s=timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._pump, 2.0)
        code = self.process.returncode
        return code if code is not None else -1


class Supervisor:
    """Starts children and remembers them, so that :meth:`stop_all` stops each one."""

    def __init__(self, log_dir: Path, sink: LineSink | None = None) -> None:
        self._log_dir = log_dir
        self._sink = sink
        self.children: list[Child] = []

    async def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Child:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_dir / f"{name}.log"
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child = Child(name, process, log_path)
        child._pump = asyncio.create_task(self._copy_output(child))
        self.children.append(child)
        return child

    async def _copy_output(self, child: Child) -> None:
        stream = child.process.stdout
        assert stream is not None
        with child.log_path.open("a", encoding="utf-8") as log_file:
            while True:
                raw = await stream.readline()
                if not raw:
                    return
                line = raw.decode(errors="replace").rstrip("\n")
                log_file.write(line + "\n")
                log_file.flush()
                if self._sink is not None:
                    self._sink(child.name, line)

    def find(self, name: str) -> Child | None:
        """The most recently started child of that name."""
        return next((child for child in reversed(self.children) if child.name == name), None)

    async def wait_unexpected_exit(self) -> Child:
        """Return the first child that exits without having been asked to."""
        while True:
            for child in self.children:
                if not child.running and not child.expected_exit:
                    return child
            await asyncio.sleep(0.2)

    async def stop(self, names: Sequence[str], timeout_s: float) -> None:
        """Stop the named children concurrently."""
        chosen = [child for child in self.children if child.name in names]
        await asyncio.gather(*(child.stop(timeout_s) for child in chosen))

    async def stop_all(self, timeout_s: float) -> None:
        for child in reversed(self.children):
            await child.stop(timeout_s)
