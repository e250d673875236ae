"""How ``wsfleet up`` shows its children's structured logs: one readable line each."""

from __future__ import annotations

import json
import sys

_SKIP = {"event", "level", "timestamp", "component", "logger", "exception"}


def render(name: str, line: str) -> str:
    """``name | HH:MM:SS level event key=value ...`` for JSON lines (a standard library
    record's logger in brackets before its text; a traceback on the lines after it);
    other lines as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return f"{name:<10} | {line}"
    if not isinstance(record, dict):
        return f"{name:<10} | {line}"
    stamp = str(record.get("timestamp", ""))[11:19]
    fields = " ".join(f"{key}={value}" for key, value in record.items() if key not in _SKIP)
    level, event = record.get("level", ""), record.get("event", "")
    if record.get("logger"):
        event = f"[{record['logger']}] {event}"
    text = f"{name:<10} | {stamp} {level:<7} {event} {fields}".rstrip()
    exception = record.get("exception")
    if isinstance(exception, str) and exception:
        text += "".join(f"\n{name:<10} |   {part}" for part in exception.splitlines())
    return text


def print_line(name: str, line: str) -> None:
    print(render(name, line), file=sys.stdout, flush=True)
