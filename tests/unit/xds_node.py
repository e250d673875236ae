"""A stand-in for the ADS service around a protocol state machine: it hears the machine's
outcomes, keeps them in order, and applies them to a ledger entry with a fake clock."""

from __future__ import annotations

from xds_server.ledger import NodeStatus
from xds_server.outcomes import Outcome


class RecordingNode:
    def __init__(self, protocol: str) -> None:
        self.outcomes: list[Outcome] = []
        self.now = 1000.0
        self.status = NodeStatus("envoy-1", "wsfleet", protocol, "", self.now)

    def __call__(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.status.apply(outcome, self.now)
