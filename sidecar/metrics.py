"""Prometheus metrics of one gateway sidecar, on a registry of its own."""

from __future__ import annotations

import collections
import os
import resource
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.core.session import SessionCounters

TRANSPORTS = {"websocket": 0, "sse": 0, "poll": 0}  # exported even when none is open
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GatewayMetrics:
    """Every metric the sidecar exports at ``GET /metrics`` (admin port)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # per-handshake counts are plain integers too, read at scrape time
        self.handshakes: collections.Counter[str] = collections.Counter()  # by outcome
        self.closes: collections.Counter[int] = collections.Counter()  # by close code
        r.register(_HandshakeCollector(self.handshakes, self.closes))
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
        # per-message counts are plain integers, read at scrape time: no lock per message
        self.counters = SessionCounters()
        r.register(_SessionCollector(self.counters))
        self.registry_errors = Counter(
            "wsfleet_gateway_registry_errors_total", "Failed registry operations", registry=r
        )
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

    def watch_channels(self, source: Callable[[], ChannelFigures]) -> None:
        """Export the channels' figures (read at scrape)."""
        self.registry.register(_ChannelCollector(source))

    def watch_gateway(
        self,
        depth: Callable[[], tuple[int, int]],
        connections: Callable[[], dict[str, int]],
    ) -> None:
        """Export open connections by transport and queued messages/bytes (read at scrape),
        and open file descriptors vs limit."""
        self.registry.register(_ProcessCollector(depth, connections))


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
        for reason, count in sorted(refused.items()):
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
            ("wsfleet_gateway_messages_in", "Messages from clients", c.messages_in),
            ("wsfleet_gateway_messages_out", "Messages to clients", c.messages_out),
            ("wsfleet_gateway_bytes_in", "Payload bytes from clients", c.bytes_in),
            ("wsfleet_gateway_bytes_out", "Payload bytes to clients", c.bytes_out),
        ):
            family = CounterMetricFamily(name, help_text)
            family.add_metric([], value)
            yield family
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


class _ProcessCollector(Collector):
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
        yield open_connections
        messages, size = self._depth()
        queued = GaugeMetricFamily(
            "wsfleet_gateway_queued_messages", "Messages waiting in send queues"
        )
        queued.add_metric([], messages)
        queued_bytes = GaugeMetricFamily(
            "wsfleet_gateway_queued_bytes", "Bytes waiting in send queues"
        )
        queued_bytes.add_metric([], size)
        fds = GaugeMetricFamily("wsfleet_gateway_open_fds", "Open file descriptors")
        fds.add_metric([], len(os.listdir("/proc/self/fd")))
        limit = GaugeMetricFamily("wsfleet_gateway_max_fds", "File descriptor limit (soft)")
        limit.add_metric([], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        yield from (queued, queued_bytes, fds, limit)
