"""The gateway's per-connection session logic, with no sockets and no event loop.

Every method takes ``now`` (seconds, any monotonic clock) and inputs, and returns
decisions; the aiohttp glue moves frames and acts on them. Unit tests drive these
classes with a fake clock. Nothing here imports asyncio, aiohttp, redis or grpc.

- :mod:`sidecar.core.close_codes`: the close codes the gateway sends, and retry hints;
- :mod:`sidecar.core.heartbeat`: ping schedule, RTTs and dead sockets for many connections;
- :mod:`sidecar.core.send_queue`: the bounded outbound queue and the slow-consumer verdict;
- :mod:`sidecar.core.rate_limit`: token buckets and the inbound message/byte limits;
- :mod:`sidecar.core.drain`: the pace of closing a pod's connections over a time budget;
- :mod:`sidecar.core.resume`: sequence numbers, and how a v1 session starts (resume, resync);
- :mod:`sidecar.core.token_life`: a session's token expiry and what a refresh does to it.
"""

from sidecar.core.close_codes import (
    CloseCode,
    backend_close,
    fit_reason,
    parse_retry_hint,
    retry_hint_reason,
)
from sidecar.core.drain import DrainPlan, DrainProgress
from sidecar.core.heartbeat import HeartbeatPolicy, HeartbeatSchedule
from sidecar.core.rate_limit import InboundLimits, InboundVerdict, TokenBucket
from sidecar.core.send_queue import Outgoing, PushResult, SendQueue

__all__ = [
    "CloseCode",
    "DrainPlan",
    "DrainProgress",
    "HeartbeatPolicy",
    "HeartbeatSchedule",
    "InboundLimits",
    "InboundVerdict",
    "Outgoing",
    "PushResult",
    "SendQueue",
    "TokenBucket",
    "backend_close",
    "fit_reason",
    "parse_retry_hint",
    "retry_hint_reason",
]
