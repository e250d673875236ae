"""How spread a reconnect burst is: the measure chaos tests and benchmarks report."""

from __future__ import annotations

import collections
import math


def peak_to_mean(times: list[float], bucket_s: float = 0.1) -> float:
    """Peak over mean of reconnects per ``bucket_s``. The mean is taken over the window
    that holds the middle 90 % of the reconnects (a few stragglers far behind, or quiet
    gaps, would otherwise make any burst look spread): 1.0 is perfectly even."""
    if len(times) < 2:
        return 1.0
    ordered = sorted(times)
    low = ordered[int(len(ordered) * 0.05)]
    high = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    window = [t for t in ordered if low <= t <= high]
    spans = max(1, math.ceil((high - low) / bucket_s))
    buckets = collections.Counter(int((t - ordered[0]) / bucket_s) for t in ordered)
    return max(buckets.values()) / (len(window) / spans)
