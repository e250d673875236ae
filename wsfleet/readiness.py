"""Ready files: how a child process tells its launcher it listens, and where.

A process that binds port 0 writes its real ports to a JSON file once it
serves; the launcher waits for the file. Written atomically (rename).
"""

from __future__ import annotations

import json
import os
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
