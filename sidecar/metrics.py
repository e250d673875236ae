"""Prometheus metrics of one gateway sidecar, on a registry of its own.

Every name is listed, with its meaning, in ``docs/metrics.md``. The hot paths stay cheap:
per-message counts are plain integers read at scrape time (:class:`SessionCounters`, the
hub's counters), histograms are observed per handshake, per batch or on a sample
(:class:`RoundTripSampler`), never per message.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.core.channel_frames import ChannelError
from sidecar.core.close_codes import CloseCode
from sidecar.core.session import SessionCounters
from wsfleet.metrics_registry import new_registry

TRANSPORTS = {"websocket": 0, "sse": 0, "poll": 0}  # exported even when none is open
STATES = ("serving", "draining", "drained")  # a drain's states (sidecar.drain.Drainer.state)
# every handshake outcome the gateway knows (docs/gateway.md), exported at 0 from the start;
# an outcome not listed here is still counted when it happens
HANDSHAKE_OUTCOMES = (
    "accepted",
    "bad_algorithm",
    "bad_key",
    "bad_request",
    "bad_routing_key",
    "bad_signature",
    "draining",
    "expired",
    "head_too_large",
    "http_version",
    "invalid",
    "malformed",
    "missing_token",
    "no_backend",
    "no_hash_key",
    "no_routing_key",
    "not_yet_valid",
    "not_websocket",
    "not_your_session",
    "rate_limited",
    "session_not_here",
    "unknown_kid",
    "user_ambiguous",
    "user_mismatch",
    "user_not_canonical",
    "user_quota",
    "websocket_version",
    "wrong_audience",
    "wrong_issuer",
)
REDIS_OPERATIONS = (
    "connections_add",
    "connections_remove",
    "connections_flush",
    "replay_create",
    "replay_grants",
    "replay_persist",
)

# ping RTT: resolves the usual 5-50 ms of a client across a region (a 30 ms target)
RTT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# handshake: token check + registry admission (a batched Redis write) + 101, ms to tens of ms
HANDSHAKE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# one Redis pipeline round trip (same region: well under 5 ms)
REDIS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# a backend's answer to a batch, and a publication's way through this gateway
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# a pass of the cycle collector: the event loop stands still meanwhile (sidecar.collector)
GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)
# a drain, around the usual budgets (10 s to 5 min)
DRAIN_BUCKETS = (5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0)

ROUND_TRIP_MAX_WAIT_S = 10.0  # a sample with no answer by then is dropped (see RoundTripSampler)


class GatewayMetrics:
    """Every metric the sidecar exports at ``GET /metrics`` (admin port)."""

    def __init__(self) -> None:
        self.registry = new_registry("gateway")
        r = self.registry
        self.info = Gauge(
            "wsfleet_gateway_info",
            "Always 1: this gateway's id, pool, region and zone (join on them)",
            ["gateway", "pool", "region", "zone"],
            registry=r,
        )
        # per-handshake counts are plain integers too, read at scrape time
        self.handshakes: collections.Counter[str] = collections.Counter(
            dict.fromkeys(HANDSHAKE_OUTCOMES, 0)
        )  # by outcome
        self.closes: collections.Counter[int] = collections.Counter(
            dict.fromkeys((int(code) for code in CloseCode), 0)
        )  # by close code
        r.register(_HandshakeCollector(self.handshakes, self.closes))
        self.handshake_seconds = Histogram(
            "wsfleet_gateway_handshake_seconds",
            "Session opens accepted, by transport: from the request read to the 101 sent "
            "(WebSocket), to the stream's first bytes (SSE), to the session open (poll)",
            ["transport"],
            buckets=HANDSHAKE_BUCKETS,
            registry=r,
        )
        self._handshake_seconds = {t: self.handshake_seconds.labels(t) for t in TRANSPORTS}
        self.dead = Counter(
            "wsfleet_gateway_dead_connections_total",
            "Connections closed because heartbeats went unanswered",
            registry=r,
        )
        self.ping_rtt = Histogram(
            "wsfleet_gateway_ping_rtt_seconds",
            "Ping to pong round trips",
            buckets=RTT_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "wsfleet_gateway_gc_pause_seconds",
            "Passes of Python's cycle collector, by generation (0 young, 2 full): the event "
            "loop stands still meanwhile (wall time, a wait for a core included)",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )
        self._gc_pause = [self.gc_pause.labels(str(generation)) for generation in range(3)]
        # per-message counts are plain integers, read at scrape time: no lock per message
        self.counters = SessionCounters()
        r.register(_SessionCollector(self.counters))
        self.registry_errors = Counter(
            "wsfleet_gateway_registry_errors_total",
            "Failed Redis calls (registry, replay store, channels)",
            registry=r,
        )
        self.redis_batch = Histogram(
            "wsfleet_gateway_redis_batch_seconds",
            "Batched Redis writes: one pipeline round trip each, by operation",
            ["operation"],
            buckets=REDIS_BUCKETS,
            registry=r,
        )
        for operation in REDIS_OPERATIONS:
            self.redis_batch.labels(operation)
        self.replayed = Counter(
            "wsfleet_gateway_replayed_messages_total",
            "Messages replayed to resuming clients",
            registry=r,
        )
        self.backends_up = Gauge(
            "wsfleet_gateway_backends_up", "Backend links that are up", registry=r
        )
        self.backend_moves = Counter(
            "wsfleet_gateway_backend_moved_sessions_total",
            "Sessions moved to another backend when theirs went away",
            registry=r,
        )
        self.bridge_round_trip = Histogram(
            "wsfleet_gateway_bridge_round_trip_seconds",
            "Sampled: a batch of client messages written to a gRPC backend, to the first "
            "backend message for one of its sessions",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery = DeliveryTimes(r)
        self.drain_seconds = Histogram(
            "wsfleet_gateway_drain_seconds",
            "Finished drains: from the drain's start to its last connection closed",
            buckets=DRAIN_BUCKETS,
            registry=r,
        )
        self.state = Gauge(
            "wsfleet_gateway_state",
            "1 for this gateway's drain state (serving, draining, drained), 0 for the others",
            ["state"],
            registry=r,
        )
        self.drain_started = Gauge(
            "wsfleet_gateway_drain_started_timestamp_seconds",
            "Unix time the running drain started; 0 when none runs",
            registry=r,
        )
        self.drain_budget = Gauge(
            "wsfleet_gateway_drain_budget_seconds",
            "The running drain's budget; 0 when none runs",
            registry=r,
        )
        self.set_drain("serving", 0.0, 0.0)

    def identify(self, gateway: str, pool: str, region: str, zone: str) -> None:
        """Set ``wsfleet_gateway_info`` (called once, when the gateway is built)."""
        self.info.clear()
        self.info.labels(gateway, pool, region, zone).set(1)

    def observe_redis_batch(self, operation: str, seconds: float) -> None:
        """One pipeline round trip of a batched writer (:class:`RedisTimer`)."""
        self.redis_batch.labels(operation).observe(seconds)

    def observe_handshake(self, transport: str, seconds: float) -> None:
        """One accepted session open (``wsfleet_gateway_handshake_seconds``)."""
        self._handshake_seconds[transport].observe(seconds)

    def observe_gc_pause(self, generation: int, seconds: float) -> None:
        self._gc_pause[generation].observe(seconds)

    def set_drain(self, state: str, started_at: float, budget_s: float) -> None:
        """The drain gauges, from :meth:`sidecar.drain.Drainer.progress` at scrape time."""
        for name in STATES:
            self.state.labels(name).set(1 if name == state else 0)
        draining = state == "draining"
        self.drain_started.set(started_at if draining else 0.0)
        self.drain_budget.set(budget_s if draining else 0.0)

    def watch_channels(self, source: Callable[[], ChannelFigures]) -> None:
        """Export the channels' figures (read at scrape)."""
        self.registry.register(_ChannelCollector(source))

    def watch_gateway(
        self,
        depth: Callable[[], tuple[int, int]],
        connections: Callable[[], dict[str, int]],
    ) -> None:
        """Export open connections by transport and queued messages/bytes (read at scrape).
        (Open file descriptors and their limit are the standard ``process_open_fds`` and
        ``process_max_fds``.)"""
        self.registry.register(_ConnectionCollector(depth, connections))


class DeliveryTimes:
    """A delivered batch of channel publications, timed twice (its oldest publication):
    from its read off Redis pub/sub (this gateway alone) and from its publish (the
    publisher's clock; the first figure for a publication that carries no publish time)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.since_read = Histogram(
            "wsfleet_gateway_delivery_seconds",
            "Channel publications, per batch: from its read off Redis pub/sub to its write "
            "to every local subscriber",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.since_publish = Histogram(
            "wsfleet_gateway_delivery_from_publish_seconds",
            "Channel publications, per batch: from its publish (the publisher's clock) to "
            "its write to every local subscriber",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, since_read_s: float, since_publish_s: float) -> None:
        self.since_read.observe(since_read_s)
        self.since_publish.observe(since_publish_s)


class RedisTimer:
    """Times batched Redis calls for ``wsfleet_gateway_redis_batch_seconds``. The writers
    own one each (no metrics until the gateway sets :attr:`observe`)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.observe: Callable[[str, float], None] = _ignore
        self._clock = clock

    @contextlib.contextmanager
    def time(self, operation: str) -> Iterator[None]:
        """Time one call (a failed one too: an outage shows as slow calls)."""
        started = self._clock()
        try:
            yield
        finally:
            self.observe(operation, self._clock() - started)


def _ignore(*_: Any) -> None:
    return None


class RoundTripSampler:
    """Samples the bridge round trip: the stream carries no request ids, so one batch at a
    time is timed, from its write to the first backend message for one of its sessions.
    Batches written while one is timed are not (a sample, not a cost per message); a
    timed batch unanswered after ``max_wait_s`` (a backend that answers nothing) is
    dropped by the next write instead of counting its silence as a round trip."""

    def __init__(
        self,
        clock: Callable[[], float] = time.perf_counter,
        max_wait_s: float = ROUND_TRIP_MAX_WAIT_S,
    ) -> None:
        self.observe: Callable[[float], None] = _ignore
        self._clock = clock
        self._max_wait_s = max_wait_s
        self._waiting: set[str] | None = None
        self._sent_at = 0.0

    def sent(self, session_ids: Iterable[str]) -> None:
        """A batch was written: ``session_ids`` of its client messages (read only when
        this batch is the one timed)."""
        now = self._clock()
        if self._waiting is not None and now - self._sent_at < self._max_wait_s:
            return
        waiting = set(session_ids)
        self._waiting = waiting or None
        self._sent_at = now

    def received(self, session_ids: Iterable[str]) -> None:
        """A backend batch was read: ``session_ids`` of its messages (read only while a
        batch is timed)."""
        if self._waiting is None:
            return
        for session_id in session_ids:
            if session_id in self._waiting:
                self.observe(self._clock() - self._sent_at)
                self._waiting = None
                return

    def reset(self) -> None:
        """The stream is gone: what was timed will get no answer."""
        self._waiting = None


ChannelFigures = tuple[int, int, int, int, int, int, dict[str, int]]
"""channels held, subscriptions, publications received, deliveries, gaps filled, resets,
requests refused by reason"""


class _ChannelCollector(Collector):
    def __init__(self, source: Callable[[], ChannelFigures]) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        channels, subscriptions, publications, deliveries, gaps, resets, refused = self._source()
        yield from (
            _gauge("wsfleet_gateway_channels", "Channels with local subscribers", channels),
            _gauge(
                "wsfleet_gateway_subscriptions",
                "Channel subscriptions of local sessions",
                subscriptions,
            ),
            _counter(
                "wsfleet_gateway_publications_received",
                "Channel publications received (once per gateway)",
                publications,
            ),
            _counter(
                "wsfleet_gateway_publication_deliveries",
                "Publications handed to local subscribers",
                deliveries,
            ),
            _counter(
                "wsfleet_gateway_channel_gaps_filled",
                "Publications the pub/sub connection missed, read from the history",
                gaps,
            ),
            _counter(
                "wsfleet_gateway_channel_resets",
                "Channels whose subscribers had to resubscribe (history could not fill a gap)",
                resets,
            ),
        )
        refusals = CounterMetricFamily(
            "wsfleet_gateway_channel_requests_refused",
            "Client channel requests refused, by reason",
            labels=["reason"],
        )
        known = {reason.value: 0 for reason in ChannelError}
        for reason, count in sorted({**known, **refused}.items()):
            refusals.add_metric([reason], count)
        yield refusals


def _gauge(name: str, text: str, value: int) -> Metric:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], value)
    return family


def _counter(name: str, text: str, value: int) -> Metric:
    family = CounterMetricFamily(name, text)
    family.add_metric([], value)
    return family


class _HandshakeCollector(Collector):
    def __init__(
        self, handshakes: collections.Counter[str], closes: collections.Counter[int]
    ) -> None:
        self._handshakes = handshakes
        self._closes = closes

    def collect(self) -> Iterator[Metric]:
        handshakes = CounterMetricFamily(
            "wsfleet_gateway_handshakes", "Handshakes by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self._handshakes.items()):
            handshakes.add_metric([outcome], count)
        closes = CounterMetricFamily(
            "wsfleet_gateway_closes", "Closed connections by close code", labels=["code"]
        )
        for code, count in sorted(self._closes.items()):
            closes.add_metric([str(int(code))], count)
        yield from (handshakes, closes)


class _SessionCollector(Collector):
    def __init__(self, counters: SessionCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        c = self._counters
        for name, help_text, value in (
            ("wsfleet_gateway_received_messages", "Messages from clients", c.messages_in),
            ("wsfleet_gateway_sent_messages", "Messages to clients", c.messages_out),
            ("wsfleet_gateway_received_bytes", "Payload bytes from clients", c.bytes_in),
            ("wsfleet_gateway_sent_bytes", "Payload bytes to clients", c.bytes_out),
        ):
            yield _counter(name, help_text, value)
        drops = CounterMetricFamily(
            "wsfleet_gateway_dropped_messages",
            "Messages dropped (shed or coalesced under backpressure, duplicates from clients)",
            labels=["why"],
        )
        drops.add_metric(["shed"], c.shed)
        drops.add_metric(["coalesced"], c.coalesced)
        drops.add_metric(["duplicate"], c.duplicates)
        yield drops
        limited = CounterMetricFamily(
            "wsfleet_gateway_rate_limited",
            "Client frames over the per-connection limits (drop: a notice; close: 1008; "
            "bad_frames: 1007 after the bad-frame budget)",
            labels=["action"],
        )
        limited.add_metric(["drop"], c.rate_limited_drops)
        limited.add_metric(["close"], c.rate_limited_closes)
        limited.add_metric(["bad_frames"], c.bad_frame_closes)
        yield limited


class _ConnectionCollector(Collector):
    def __init__(
        self, depth: Callable[[], tuple[int, int]], connections: Callable[[], dict[str, int]]
    ) -> None:
        self._depth = depth
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        open_connections = GaugeMetricFamily(
            "wsfleet_gateway_connections", "Open client connections", labels=["transport"]
        )
        for transport, count in sorted({**TRANSPORTS, **self._connections()}.items()):
            open_connections.add_metric([transport], count)
        messages, size = self._depth()
        yield from (
            open_connections,
            _gauge("wsfleet_gateway_queued_messages", "Messages waiting in send queues", messages),
            _gauge("wsfleet_gateway_queued_bytes", "Bytes waiting in send queues", size),
        )
