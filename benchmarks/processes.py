"""Child processes of a benchmark: started so they cannot outlive it, pinned to cores on
request, and all stopped on every way out (normal end, exception, SIGTERM, SIGINT).

- :func:`spawn` starts a helper (load generator, SDK workers) in its own session (a
  terminal's Ctrl-C reaches only the benchmark, which stops it in order), asks the kernel
  to kill it if the benchmark dies (``PR_SET_PDEATHSIG``), and optionally pins it.
- :func:`pin` sets the CPU affinity of every thread of a process and of its descendants.
- :func:`run` runs a benchmark's ``main``: SIGTERM and SIGINT cancel it (so its
  ``finally`` blocks stop what they started), then every descendant still alive is
  terminated, waited for, and killed after a deadline. A second signal, or an orderly
  stop longer than ``GRACE_S``, kills them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import psutil

_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 5.0  # after SIGTERM, before SIGKILL
GRACE_S = 30.0  # after SIGTERM or SIGINT: the orderly stop, then everything is killed
CLIENT_CORE = 0  # --pin: load generators (and the benchmark itself)
SERVER_CORE = 1  # --pin: every server-side process


def _child_setup(cores: frozenset[int] | None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if cores:
        os.sched_setaffinity(0, cores)


async def spawn(
    *argv: str, cores: frozenset[int] | None = None, limit: int = 1 << 24
) -> asyncio.subprocess.Process:
    """Start a helper with stdin and stdout piped (JSON lines); see the module docstring."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: _child_setup(cores),
        limit=limit,
    )


async def finish(process: asyncio.subprocess.Process, timeout_s: float) -> None:
    """Wait for a helper to exit by itself (it was told to); kill it after ``timeout_s``."""
    if process.returncode is not None:
        return
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)


def check_pinning() -> None:
    """Raise SystemExit with a clear message if cores 0 and 1 are not both available."""
    available = os.sched_getaffinity(0)
    wanted = {CLIENT_CORE, SERVER_CORE}
    if not wanted <= available:
        raise SystemExit(
            f"--pin needs CPU cores {sorted(wanted)}; this process may only use {sorted(available)}"
        )


def _tree(pid: int) -> Iterator[psutil.Process]:
    try:
        root = psutil.Process(pid)
        yield root
        yield from root.children(recursive=True)
    except psutil.NoSuchProcess:
        return


def _thread_ids(pid: int) -> Iterator[int]:
    """Every thread of ``pid`` and of its descendants (processes that went away skipped)."""
    for process in _tree(pid):
        try:
            threads = [thread.id for thread in process.threads()]
        except psutil.NoSuchProcess:
            continue
        yield from threads


def pin(pid: int, cores: frozenset[int]) -> None:
    """Pin every thread of ``pid`` and of its descendants to ``cores``."""
    for tid in _thread_ids(pid):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cores)


def affinity(pid: int) -> list[int]:
    """The union of the cores the threads of ``pid`` and its descendants may run on."""
    cores: set[int] = set()
    for tid in _thread_ids(pid):
        with contextlib.suppress(ProcessLookupError):
            cores |= os.sched_getaffinity(tid)
    return sorted(cores)


@contextlib.contextmanager
def own_affinity(cores: frozenset[int] | None) -> Iterator[None]:
    """Run this (calling) thread on ``cores`` inside the block, so that processes started
    meanwhile inherit them; then restore. ``None``: no change."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def stop_descendants(timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """Terminate every process this one started (at any depth) that is still alive, wait
    up to ``timeout_s``, kill the rest. Returns what had to be stopped (name and pid)."""
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    stopped = []
    for child in children:
        try:
            stopped.append(f"{child.name()} (pid {child.pid})")
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=timeout_s)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT_S)
    return stopped


def _kill_descendants() -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def run(main: Coroutine[Any, Any, None]) -> int:
    """Run a benchmark's ``main``; returns the exit code (0, 1 on error, 128 + signal)."""
    received: list[int] = []

    async def guarded() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def force() -> None:  # asked twice, or the orderly stop takes too long
            _kill_descendants()
            task.cancel()

        def on_signal(signum: int) -> None:
            received.append(signum)
            if len(received) == 1:
                name = signal.Signals(signum).name
                sys.stderr.write(f"\n{name}: stopping every process this benchmark started\n")
                task.cancel()
                loop.call_later(GRACE_S, force)
            else:
                force()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await main
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    code = 0
    try:
        asyncio.run(guarded())
    except (asyncio.CancelledError, KeyboardInterrupt):
        code = 128 + (received[0] if received else signal.SIGINT)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
        if exit_.code is not None and not isinstance(exit_.code, int):
            sys.stderr.write(f"{exit_.code}\n")
    except Exception as exc:  # reported, then the children are stopped: exit 1
        import traceback

        traceback.print_exception(exc)
        sys.stderr.write(f"\nbenchmark failed: {type(exc).__name__}: {exc}\n")
        code = 1
    finally:
        leftovers = stop_descendants()
        if leftovers:
            sys.stderr.write(f"stopped left-over child processes: {', '.join(leftovers)}\n")
    return code
