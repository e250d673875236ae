"""Print benchmark figures as JSON and as a readable table; keep a copy on disk.

One rule for every ratio a benchmark prints (:func:`ratio`): a ratio whose numerator or
denominator is missing, not finite, or ~0 (below the measurement's resolution) is not a
figure. It is ``None`` in Python, ``null`` in the JSON and ``n/a`` in the table, never
"3,333,333x" made up by dividing by a floor.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
NA = "n/a"
# Below this a denominator is noise for every figure the benchmarks divide by (KB, ms,
# handshakes/s, messages per CPU-second...): callers with coarser units pass their own.
TINY = 1e-9
# CPU seconds come in clock ticks (10 ms) per process: less than this is not a measurement,
# so a rate per CPU-second over less is n/a.
MIN_CPU_S = 0.05


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p99, max, mean (NaN when empty: published as null)."""
    return {
        "n": len(values),
        "p50": percentile(values, 0.5),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def number(value: Any) -> float | None:
    """``value`` as a float, or None if it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def ratio(numerator: Any, denominator: Any, tiny: float = TINY) -> float | None:
    """``numerator / denominator`` of two non-negative figures (costs, rates, latencies),
    or None (n/a) if either is missing or not finite, the numerator is negative, or the
    denominator is ~0 or negative (``denominator < tiny``: nothing measurable)."""
    top, bottom = number(numerator), number(denominator)
    if top is None or bottom is None or top < 0 or bottom < tiny:
        return None
    return top / bottom


def per(amount: Any, spent: Any, tiny: float = TINY) -> float | None:
    """A rate such as messages per CPU-second, by the same rule as :func:`ratio`: n/a when
    what was spent is below ``tiny`` (pass the clock's resolution, e.g. ``MIN_CPU_S``)."""
    return ratio(amount, spent, tiny)


def fmt_ratio(value: float | None) -> str:
    """``1.234x``, or ``n/a``."""
    if number(value) is None:
        return NA
    assert value is not None
    return f"{value:.3f}x" if abs(value) < 100 else f"{value:,.1f}x"


def ms(value: Any) -> float | None:
    """Seconds to milliseconds, keeping n/a."""
    seconds = number(value)
    return None if seconds is None else seconds * 1000


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(cell) for cell in header]] + [[_fmt(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in cells
    ]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def _fmt(cell: Any) -> str:
    if cell is None:
        return NA
    if isinstance(cell, float):
        if not math.isfinite(cell):
            return NA
        return f"{cell:.3f}" if abs(cell) < 100 else f"{cell:.1f}"
    return str(cell)


def clean(value: Any) -> Any:
    """A copy of ``value`` fit for strict JSON: NaN and infinities become None (null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean(item) for item in value]
    return value


def publish(
    name: str, figures: dict[str, Any], readable: str, directory: Path | None = None
) -> Path:
    """Print the figures (JSON, then the table) and save the JSON as ``directory/NAME.json``
    (default: benchmarks/results/). NaN and infinities are written as null."""
    figures = clean(
        {
            "benchmark": name,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **figures,
        }
    )
    directory = RESULTS if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    text = json.dumps(figures, indent=2, allow_nan=False)
    path.write_text(text)
    print(text)
    print()
    print(readable)
    print(f"\n(saved to {path})", flush=True)
    return path
