"""Python's cycle collector in a gateway: its thresholds, and every pass timed.

A pass stops the event loop, so every client of the pod waits for it: its length is a
latency floor for the pod's pings and messages. A pass over a generation walks every
object in it, and at thousands of connections the objects are many and far apart in
memory (≈ 0.5-1 µs each, measured at 6,250 connections per gateway).

- **Full passes** walk every live object (27 per held connection that has spoken,
  measured between 3,000 and 9,000 connections): 0.3-0.5 s at 8,000 connections.
  Python's default thresholds ran one every few seconds under steady traffic; here one
  runs at most once per 500 middle passes (and, as Python does, only once the objects
  that survived since the last one are a quarter of the rest).
- **Young passes** (generation 0) walk what was allocated since the last one and still
  lives; 10,000 more allocations than deallocations start one. Fewer would mean more
  passes over the same objects in flight (a surge of handshakes holds tens of thousands)
  for the same pause.
- **Middle passes** (generation 1) walk what survived the young passes since the last
  one, once more than ``threshold1`` young passes have run since. At 10 (this project's
  setting before, Python's default): up to 110,000 objects, 60-85 ms of CPU at 25,000
  connections over 4 gateways (300 ms of wall time on a busy machine). At 2 (a middle
  pass in place of every third young one): 30,000 at most, 20-30 ms. The price: objects
  of the handshakes in flight are walked more often (45 ms more CPU per gateway over a run
  that opened 20,000 connections at 1,500/s and carried 2 x 15 s of traffic: 0.1 % of a
  core).
- **A pass every second at least** (:class:`PassPacer`: young and middle together).
  The thresholds count allocations *minus* deallocations, but an object that replaces
  another (the read loop's waiter of every connection that spoke, a session's record at
  each registry flush) lands in the young generation while the count stays put: under
  steady traffic the count barely moves, no pass runs, and the young generation fills
  with up to a few such objects per connection that has spoken. The pass that finally
  comes (the next handshakes, the first messages of new connections) walks them all:
  33,000-50,000 objects and 15-45 ms of CPU at 9,000 connections on one gateway, and
  50-120 ms of wall time at 12,500 per gateway on the busy 50,000-connection machine.
  Passed every second, each walks about a second's worth: at 9,000 connections and 500
  messages/s the longest pass in 40 s of traffic took 4.6 ms of CPU (44 ms without).

:class:`PauseTimer` observes each pass's wall time (a wait for a core included: what the
clients see) in ``wsfleet_gateway_gc_pause_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from typing import Any

COLLECTOR_THRESHOLDS = (10_000, 2, 500)  # young allocations, young passes, middle passes
PASS_EVERY_S = 1.0  # PassPacer: at most this long between two middle passes


class PauseTimer:
    """A ``gc.callbacks`` entry: each pass's length, by generation, to ``observe``."""

    __slots__ = ("_clock", "_observe", "_started")

    def __init__(
        self,
        observe: Callable[[int, float], None],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = self._clock()
        else:
            self._observe(info["generation"], self._clock() - self._started)


def tune_collector(
    stack: contextlib.ExitStack | contextlib.AsyncExitStack, observe: Callable[[int, float], None]
) -> None:
    """Set the gateway's thresholds and time every pass, until ``stack`` closes (then the
    thresholds before are back and the timer is gone)."""
    before = gc.get_threshold()
    timer = PauseTimer(observe)
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    gc.callbacks.append(timer)
    stack.callback(gc.set_threshold, *before)
    stack.callback(gc.callbacks.remove, timer)


class PassPacer:
    """A middle pass (young and middle generations) whenever none has run for
    ``interval_s``: what replaced older objects since the last pass is walked a second's
    worth at a time, not all at once by the next pass the thresholds start. When the
    thresholds start middle passes more often than that (a fast surge of handshakes), the
    pacer adds none; when they start one about as often, a paced pass takes its place (it
    sets the thresholds' counts back to zero as theirs would). A full pass still needs
    ``COLLECTOR_THRESHOLDS[2]`` middle passes since the last one (so paced ones alone
    start one at most every 500 s) and the objects that survived since then to be a
    quarter of the rest.

    Also a ``gc.callbacks`` entry, while :meth:`run` runs: it notes each middle or full
    pass, whoever started it."""

    __slots__ = ("_clock", "_last", "interval_s")

    def __init__(
        self, interval_s: float = PASS_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= 1:
            self._last = self._clock()

    def due_in(self) -> float:
        """Seconds until the next paced pass (0: now)."""
        return max(0.0, self._last + self.interval_s - self._clock())

    async def run(self) -> None:
        """Pace the passes, forever."""
        gc.callbacks.append(self)
        try:
            while True:
                wait = self.due_in()
                if wait > 0:
                    await asyncio.sleep(wait)
                else:
                    gc.collect(1)  # noted by __call__: the next is interval_s away
        finally:
            gc.callbacks.remove(self)
