"""How ``wsfleet up`` shows its children's structured logs: one readable line each."""

from __future__ import annotations

import json
import sys

_SKIP = {"event", "level", "timestamp", "component"}


def render(name: str, line: str) -> str:
    """``name | HH:MM:SS level event key=value ...`` for JSON lines; others as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return f"{name:<10} | {line}"
    if not isinstance(record, dict):
        return f"{name:<10} | {line}"
    stamp = str(record.get("timestamp", ""))[11:19]
    fields = " ".join(f"{key}={value}" for key, value in record.items() if key not in _SKIP)
    level, event = record.get("level", ""), record.get("event", "")
    return f"{name:<10} | {stamp} {level:<7} {event} {fields}".rstrip()


def print_line(name: str, line: str) -> None:
    print(render(name, line), file=sys.stdout, flush=True)
