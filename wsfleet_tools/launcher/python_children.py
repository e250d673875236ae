"""Start a Python child of the fleet (``python -m wsfleet_tools ...``: a control plane, a
sidecar, a server API, a backend) and wait for its ready file: the facts (ports) it writes
once it serves."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from wsfleet.errors import StartupError
from wsfleet.readiness import read_ready
from wsfleet_tools.launcher.children import PORT_FLAGS, Child
from wsfleet_tools.launcher.fleet_model import STARTUP_TIMEOUT_S, FleetContext


async def start_python(
    ctx: FleetContext,
    name: str,
    argv: list[str],
    module: str = "wsfleet_tools",
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``python -m module`` (the ``wsfleet`` command by default), until it is ready."""
    ready_file = ctx.run_dir / f"{name}.ready.json"
    child = await ctx.supervisor.start(
        name,
        [
            sys.executable,
            "-m",
            module,
            "--log-level",
            ctx.options.log_level,
            *argv,
            "--ready-file",
            str(ready_file),
        ],
        env,
    )
    facts = await wait_ready(child, ready_file)
    # a restart (restart_children) binds the same ports: Envoy, sidecars, the registry
    # and the ready facts we keep all expect it there
    chat = {"port": "--grpc-port", "http_port": "--http-port"}
    child.pin_ports(facts, chat if module == "examples.chat" else PORT_FLAGS)
    return facts


async def wait_ready(child: Child, ready_file: Path) -> dict[str, Any]:
    """The child's ready facts; a child that exits first, or is not ready in time, fails the
    start with what it said last."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        facts = read_ready(ready_file)
        if facts is not None:
            return facts
        if not child.running:
            await child.stop(1.0)
            raise StartupError(f"{child.name} exited at start:\n{child.tail(5)}")
        await asyncio.sleep(0.05)
    raise StartupError(f"{child.name} did not become ready in {STARTUP_TIMEOUT_S:.0f} s")
