"""Per-connection session rules as plain logic: no sockets, no event loop.

Every method takes ``now`` (seconds) and inputs and returns decisions; the
aiohttp glue in :mod:`sidecar` moves frames and acts on them. Unit tests drive
these with a fake clock.

- :mod:`sidecar.session.close_codes`: the close codes and retry hints;
- :mod:`sidecar.session.heartbeat`: ping schedule, RTTs, dead-socket detection for many connections;
- :mod:`sidecar.session.send_queue`: the bounded outbound queue and the slow-consumer verdict;
- :mod:`sidecar.session.rate_limit`: token buckets and inbound message/byte limits.
"""

from sidecar.session.close_codes import CloseCode, parse_retry_hint, retry_hint_reason
from sidecar.session.heartbeat import HeartbeatPolicy, HeartbeatSchedule
from sidecar.session.rate_limit import InboundLimits, InboundVerdict, TokenBucket
from sidecar.session.send_queue import Outgoing, PushResult, SendQueue

__all__ = [
    "CloseCode",
    "HeartbeatPolicy",
    "HeartbeatSchedule",
    "InboundLimits",
    "InboundVerdict",
    "Outgoing",
    "PushResult",
    "SendQueue",
    "TokenBucket",
    "parse_retry_hint",
    "retry_hint_reason",
]
