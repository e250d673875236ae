"""Sustained: the surge's connections held for ``--hold`` seconds; then the RSS of every
server process, and its growth per connection since before the surge."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from benchmarks.load import generators
from benchmarks.load.generators import Usage
from benchmarks.load.targets import Target


async def hold(target: Target, seconds: float) -> Usage:
    """The servers' readings after holding the connections for ``seconds``."""
    await asyncio.sleep(seconds)
    return generators.usage(target.processes)


def figures(before: Usage, held: Usage, opened: int, args: argparse.Namespace) -> dict[str, Any]:
    per_role_kb = {role: (held[role][0] - before[role][0]) * 1024 / max(1, opened) for role in held}
    return {
        "hold_s": args.hold,
        "rss_mb": {role: held[role][0] for role in held},
        "kb_per_connection": per_role_kb,
        "kb_per_connection_total": sum(per_role_kb.values()),
    }
