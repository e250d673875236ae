"""Child processes of the launcher: started, logged, stopped, never orphaned, restarted.

Each child runs in its own session (Ctrl-C reaches only the launcher, which
stops children in order) and is asked by the kernel to die with its parent
(``PR_SET_PDEATHSIG``) so even a killed launcher leaves nothing behind.

With restarts on (``wsfleet up``), a child that dies without having been asked to is
reported and started again with the same command line, after the backoff of
:class:`~wsfleet_tools.launcher.restart_policy.RestartPolicy`, like a Kubernetes pod
with ``restartPolicy: Always``. A child stopped through :meth:`Child.stop` (every
intentional stop: ``stop_sidecar``, rollouts, chaos helpers, shutdown) stays stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import structlog

from wsfleet_tools.launcher.ports import port_is_listening
from wsfleet_tools.launcher.restart_policy import RestartPolicy, RestartSettings
from wsfleet_tools.log_view import render

log = structlog.get_logger()

LineSink = Callable[[str, str], None]  # (child name, line)
_PR_SET_PDEATHSIG = 1
BACK_TIMEOUT_S = 30.0  # a restarted child that is not serving again by then is reported
TAIL_LINES = 5  # log lines shown when a child dies
REPORTER = "launcher"  # the name the launcher's own lines are shown under

# A ready fact -> the flag that asks for that port again (children bind port 0 first)
PORT_FLAGS = {
    "port": "--port",
    "admin_port": "--admin-port",
    "grpc_port": "--grpc-port",
    "http_port": "--http-port",
}

# What a restart of each kind of child means, shown with the restart (by name prefix)
_RESTART_NOTES = (
    ("sidecar-", "its clients were cut and reconnect to any pod; it keeps its pod id and ports"),
    ("envoy", "the clients it carried were cut and reconnect"),
    ("l4", "every client connection through it was cut and reconnects"),
    ("xds", "Envoys fail over to another replica meanwhile (with --xds-replicas 2+)"),
    ("redis-", "it rejoins the cluster from its nodes.conf, empty (a replica if one took over)"),
    ("redis", "it comes back EMPTY: pods write their records again; history is gone"),
    ("api-", ""),
    ("backend-", "sidecars reconnect their bridges to it"),
    ("chat-", "sidecars reconnect their bridges to it"),
)


def restart_note(name: str) -> str:
    return next((note for prefix, note in _RESTART_NOTES if name.startswith(prefix)), "")


def pinned_argv(
    argv: Sequence[str], facts: Mapping[str, object], flags: Mapping[str, str]
) -> list[str]:
    """``argv`` asking for the ports a child bound (``facts``, from its ready file) instead
    of any free one: a restart comes back where Envoy, the registry and the other children
    expect it. A flag already present gets the value; a missing one is appended."""
    pinned = list(argv)
    for fact, flag in flags.items():
        if fact not in facts:
            continue
        value = str(facts[fact])
        if flag in pinned[:-1]:
            pinned[pinned.index(flag) + 1] = value
        else:
            pinned += [flag, value]
    return pinned


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child:
    """One child: its command line, its current process and the task copying its output."""

    def __init__(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None, log_path: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.expected_exit = False
        self.restarts = 0
        self.process: asyncio.subprocess.Process
        self._pump: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._spawning = asyncio.Lock()  # held while a restart starts a new process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    @property
    def ready_file(self) -> Path | None:
        """The file this child writes once it serves, named on its command line: a Python
        child's ``--ready-file``, an Envoy's ``--admin-address-path``."""
        value = _flag_value(self.argv, "--ready-file") or _flag_value(
            self.argv, "--admin-address-path"
        )
        return Path(value) if value else None

    @property
    def ready_port(self) -> int | None:
        """The port this child's command line asks for (``--port N``; None for any port)."""
        value = _flag_value(self.argv, "--port")
        return int(value) if value and value.isdigit() and int(value) > 0 else None

    @property
    def watched(self) -> bool:
        """Whether the supervisor would still restart this child if it died."""
        return self._keeper is not None and not self._keeper.done()

    def pin_ports(self, facts: Mapping[str, object], flags: Mapping[str, str] = PORT_FLAGS) -> None:
        """Restarts ask for the ports this child reported (see :func:`pinned_argv`)."""
        self.argv = pinned_argv(self.argv, facts, flags)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout_s: float, sig: int = signal.SIGTERM) -> int:
        """Signal, wait up to ``timeout_s``, then SIGKILL. Returns the exit code. The child
        is not restarted afterwards (nor while this runs)."""
        self.expected_exit = True
        async with self._spawning:  # a restart either finished starting or never will
            if self._keeper is not None and self._keeper is not asyncio.current_task():
                self._keeper.cancel()
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
    """Starts children and remembers them, so that :meth:`stop_all` stops each one; with
    ``restart`` settings, restarts those that die unasked."""

    def __init__(
        self,
        log_dir: Path,
        sink: LineSink | None = None,
        restart: RestartSettings | None = None,
        on_back: Callable[[Child], Awaitable[None]] | None = None,
    ) -> None:
        self._log_dir = log_dir
        self._sink = sink
        self._restart = restart
        # awaited once a restarted child is up: notes what changed (an Envoy's admin port) and
        # waits until it really serves (Envoy routes to a pod again); raises if it does not
        self._on_back = on_back
        self.closing = False  # set when the fleet shuts down: nothing is restarted any more
        self.children: list[Child] = []

    async def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Child:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        child = Child(name, argv, env, self._log_dir / f"{name}.log")
        policy = RestartPolicy(self._restart) if self._restart is not None else None
        await self._spawn(child, policy)
        self.children.append(child)
        if policy is not None:
            child._keeper = asyncio.create_task(self._keep(child, policy))
        return child

    async def _spawn(self, child: Child, policy: RestartPolicy | None) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(child.env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child._pump = asyncio.create_task(self._copy_output(child, child.process))
        if policy is not None:
            policy.started(asyncio.get_running_loop().time())

    async def _copy_output(self, child: Child, process: asyncio.subprocess.Process) -> None:
        stream = process.stdout
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

    def report(self, text: str) -> None:
        """A line of the launcher's own, shown with the children's (or logged)."""
        if self._sink is not None:
            for line in text.splitlines():
                self._sink(REPORTER, line)
        else:
            log.warning("launcher_report", message=text)

    async def _keep(self, child: Child, policy: RestartPolicy) -> None:
        """Restart ``child`` whenever it dies unasked, until it is stopped or we close."""
        loop = asyncio.get_running_loop()
        while True:
            code = await child.process.wait()
            if child._pump is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(child._pump, 2.0)
            if child.expected_exit or self.closing:
                return
            decision = policy.exited(loop.time())
            tail = "\n".join(
                f"    > {render(child.name, line)}" for line in child.tail(TAIL_LINES).splitlines()
            )
            note = restart_note(child.name)
            if decision.crash_looping:
                self.report(
                    f"{child.name} is crash-looping: {decision.exits_in_window} restarts in "
                    f"{policy.settings.crash_loop_window_s:g} s, next try in "
                    f"{decision.delay_s:.1f} s; last lines of {child.log_path}:\n{tail}"
                )
            else:
                self.report(
                    f"{child.name} (pid {child.pid}) exited unexpectedly (code {code}) after "
                    f"{decision.ran_s:.1f} s; restarting it in {decision.delay_s:.1f} s"
                    f"{'; ' + note if note else ''}; last lines of {child.log_path}:\n{tail}"
                )
            await asyncio.sleep(decision.delay_s)  # cancelled by Child.stop
            async with child._spawning:
                if child.expected_exit or self.closing:
                    return
                if child.ready_file is not None:
                    child.ready_file.unlink(missing_ok=True)
                try:
                    await self._spawn(child, policy)
                except OSError as exc:  # e.g. the binary is gone: retried with the backoff
                    self.report(f"{child.name} could not be started again: {exc}")
                    policy.started(loop.time())
                    continue
                child.restarts += 1
            started = loop.time()
            problem = f"not up after {BACK_TIMEOUT_S:g} s"
            if await self._serving(child, started + BACK_TIMEOUT_S):
                try:
                    if self._on_back is not None:
                        await self._on_back(child)
                    problem = ""
                except Exception as exc:  # reported, never lost; the child keeps running
                    problem = f"{type(exc).__name__}: {exc}"
            if not problem:
                self.report(
                    f"{child.name} is back (pid {child.pid}, restart {child.restarts}, "
                    f"serving {loop.time() - started:.1f} s after it started)"
                )
            elif child.running:
                self.report(
                    f"{child.name} (pid {child.pid}) runs again but is not serving "
                    f"({problem}); see {child.log_path}"
                )

    async def _serving(self, child: Child, deadline: float) -> bool:
        """Whether the restarted child serves (its ready file or port) before ``deadline``;
        False at once if it died again."""
        loop = asyncio.get_running_loop()
        ready_file, port = child.ready_file, child.ready_port
        while loop.time() < deadline and child.running:
            ready = ready_file is None or _has_content(ready_file)
            listening = port is None or port_is_listening("127.0.0.1", port)
            if ready and listening:
                return True
            await asyncio.sleep(0.05)
        return False

    def find(self, name: str) -> Child | None:
        """The most recently started child of that name."""
        return next((child for child in reversed(self.children) if child.name == name), None)

    async def wait_unexpected_exit(self) -> Child:
        """Return the first child that exits without having been asked to (and that is not
        restarted: with restarts on, this never returns)."""
        while True:
            for child in self.children:
                if not child.running and not child.expected_exit and child._keeper is None:
                    return child
            await asyncio.sleep(0.2)

    async def stop(self, names: Sequence[str], timeout_s: float) -> None:
        """Stop the named children concurrently."""
        chosen = [child for child in self.children if child.name in names]
        await asyncio.gather(*(child.stop(timeout_s) for child in chosen))

    async def stop_all(self, timeout_s: float) -> None:
        self.closing = True
        for child in reversed(self.children):
            await child.stop(timeout_s)


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else None


def _has_content(path: Path) -> bool:
    try:
        return bool(path.read_text().strip())
    except OSError:
        return False
