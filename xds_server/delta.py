"""The Delta (incremental) ADS protocol, as a state machine with no I/O.

Per type, the stream remembers which resources the Envoy has and at which
version (``known``), seeded from ``initial_resource_versions`` when a stream
starts (so after a control-plane restart nothing unchanged is re-sent).
Responses carry only resources whose version differs, plus the names removed.

Rules:

- subscribe/unsubscribe changes always apply (they are incremental: never dropped);
- ACK/NACK is by nonce; a nonce that is not the last one sent is stale;
- one response per type is in flight; the next goes after the ACK or NACK;
- a NACK is recorded; the rejected versions count as known, so they are
  never re-sent, only a later, different version is;
- every Cluster that Envoy ACKs gets its ClusterLoadAssignment pushed again:
  in Delta, Envoy does not re-subscribe EDS after a cluster update and the
  cluster would stay warming until ``initial_fetch_timeout`` (docs/envoy-behaviours.md, 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xds_server import type_urls
from xds_server.outcomes import Acked, Nacked, Sent, Subscribed, Subscriber
from xds_server.snapshot import Resource, Snapshot


@dataclass(frozen=True, slots=True)
class DeltaRequest:
    """What the state machine needs from a ``DeltaDiscoveryRequest``."""

    type_url: str
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    initial_versions: Mapping[str, str] = field(default_factory=dict)
    response_nonce: str = ""
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DeltaResponse:
    """A ``DeltaDiscoveryResponse`` to send."""

    type_url: str
    system_version: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]


@dataclass
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    known: dict[str, str] = field(default_factory=dict)  # name -> version the Envoy has
    force: set[str] = field(default_factory=set)  # re-send these even if unchanged
    answered: bool = False  # the first request got its response
    awaiting_reply: bool = False
    sent_nonce: str = ""
    sent_version: str = ""
    sent_names: tuple[str, ...] = ()


@dataclass
class DeltaStream:
    """One Envoy's Delta ADS stream (all types multiplexed); ``report`` hears each outcome."""

    report: Subscriber
    _types: dict[str, _TypeState] = field(default_factory=dict)
    _nonce: int = 0

    def on_request(self, request: DeltaRequest, snapshot: Snapshot | None) -> list[DeltaResponse]:
        if request.type_url not in type_urls.ALL:
            return []
        state = self._types.get(request.type_url)
        if state is None:
            state = self._types[request.type_url] = _TypeState(
                wildcard=request.type_url in type_urls.WILDCARD_TYPES and not request.subscribe,
                known=dict(request.initial_versions),
            )
        self._apply_subscription(state, request)
        self.report(
            Subscribed(request.type_url, None if state.wildcard else tuple(sorted(state.names)))
        )
        responses: list[DeltaResponse] = []
        if request.response_nonce and request.response_nonce == state.sent_nonce:
            state.awaiting_reply = False
            if request.error_message is not None:
                self.report(Nacked(request.type_url, state.sent_version, request.error_message))
            else:
                self.report(Acked(request.type_url, state.sent_version))
                if request.type_url == type_urls.CLUSTER:
                    responses += self._refresh_endpoints(state.sent_names, snapshot)
        responses += self._respond(request.type_url, state, snapshot)
        return responses

    def on_snapshot(self, snapshot: Snapshot) -> list[DeltaResponse]:
        responses: list[DeltaResponse] = []
        for type_url, state in self._types.items():
            responses += self._respond(type_url, state, snapshot)
        return responses

    @staticmethod
    def _apply_subscription(state: _TypeState, request: DeltaRequest) -> None:
        for name in request.subscribe:
            if name == "*":
                state.wildcard = True
            else:
                state.names.add(name)
        for name in request.unsubscribe:
            if name == "*":
                state.wildcard = False
            else:
                state.names.discard(name)
                state.known.pop(name, None)

    def _refresh_endpoints(
        self, clusters: tuple[str, ...], snapshot: Snapshot | None
    ) -> list[DeltaResponse]:
        endpoints = self._types.get(type_urls.ENDPOINT)
        if endpoints is None or not clusters:
            return []
        endpoints.force.update(clusters)
        return self._respond(type_urls.ENDPOINT, endpoints, snapshot)

    def _respond(
        self, type_url: str, state: _TypeState, snapshot: Snapshot | None
    ) -> list[DeltaResponse]:
        if snapshot is None or state.awaiting_reply:
            return []
        typed = snapshot.of(type_url)
        wanted = set(typed.resources) if state.wildcard else state.names
        changed = tuple(
            typed.resources[name]
            for name in sorted(wanted)
            if name in typed.resources
            and (state.known.get(name) != typed.resources[name].version or name in state.force)
        )
        removed = tuple(
            sorted(
                name
                for name in state.known
                if name not in typed.resources and (state.wildcard or name in state.names)
            )
        )
        if not changed and not removed and state.answered:
            return []
        for resource in changed:
            state.known[resource.name] = resource.version
            state.force.discard(resource.name)
        for name in removed:
            del state.known[name]
        self._nonce += 1
        nonce = str(self._nonce)
        state.answered = True
        state.awaiting_reply = True
        state.sent_nonce = nonce
        state.sent_version = typed.version
        state.sent_names = tuple(resource.name for resource in changed)
        self.report(Sent(type_url, typed.version, nonce))
        return [DeltaResponse(type_url, typed.version, nonce, changed, removed)]
