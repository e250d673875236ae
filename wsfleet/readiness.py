"""Ready files: how a child process tells its launcher it listens, and where.

A process that binds port 0 writes its real ports to a JSON file once it
serves; the launcher waits for the file. Written atomically (rename).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any


def write_ready(path: Path | None, **facts: Any) -> None:
    if path is None:
        return
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(facts))
    os.replace(temporary, path)


def read_ready(path: Path) -> dict[str, Any] | None:
    try:
        facts: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return facts


async def wait_ready(path: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    """The facts a child wrote to ``path``, once it has written them."""
    deadline = time.monotonic() + timeout_s
    while (facts := read_ready(path)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:g} s")
        await asyncio.sleep(0.05)
    return facts
