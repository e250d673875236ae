"""The State-of-the-World ADS protocol, as a state machine with no I/O.

Feed it each request (:meth:`SotwStream.on_request`) and each new snapshot
(:meth:`SotwStream.on_snapshot`); it returns the responses to send. One
response per type is in flight at a time: the next is sent after Envoy ACKs
or NACKs the previous one (the "watch" model of go-control-plane).

Rules, with the Envoy behaviours they answer (docs/envoy-behaviours.md):

- a request whose nonce is not the last one sent for its type is stale: ignored;
- ACK: ``response_nonce`` is the last nonce, no ``error_detail``;
- NACK: ``error_detail`` set; recorded; the rejected content is never re-sent,
  only a later, different one;
- a second request carrying an already-ACKed nonce is a re-subscribe (Envoy
  does this for EDS after a CDS update, behaviour 1): answered with current state;
- a request without a nonce (a new stream: Envoy reconnected, to this replica or
  another, or after a control-plane restart) is answered, unless it is for a wildcard
  type (CDS, LDS) and reports the version this snapshot has: versions are content
  hashes, so Envoy already holds exactly that content and nothing is re-sent (the
  stream then behaves as if it had sent and Envoy ACKed it). Named types (EDS, RDS,
  SDS) are always answered: the request does not say which names the reported
  version covered, and a name added just before the reconnect must not wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xds_server import type_urls
from xds_server.outcomes import Acked, Nacked, Sent, Subscribed, Subscriber
from xds_server.snapshot import Resource, Snapshot

ContentKey = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Request:
    """What the state machine needs from a ``DiscoveryRequest``."""

    type_url: str
    version_info: str = ""
    resource_names: tuple[str, ...] = ()
    response_nonce: str = ""
    error_message: str | None = None  # set on a NACK


@dataclass(frozen=True, slots=True)
class Response:
    """A ``DiscoveryResponse`` to send."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[Resource, ...]


@dataclass
class _TypeState:
    names: frozenset[str] | None = None  # None: wildcard
    wants_response: bool = False  # asked before any snapshot existed
    awaiting_reply: bool = False  # a response is in flight
    sent_nonce: str = ""
    sent_key: ContentKey | None = None
    sent_version: str = ""
    acked_nonce: str = ""
    nacked_key: ContentKey | None = None


@dataclass
class SotwStream:
    """One Envoy's SotW ADS stream (all types multiplexed); ``report`` hears each outcome."""

    report: Subscriber
    _types: dict[str, _TypeState] = field(default_factory=dict)
    _nonce: int = 0

    def on_request(self, request: Request, snapshot: Snapshot | None) -> list[Response]:
        if request.type_url not in type_urls.ALL:
            return []
        state = self._types.setdefault(request.type_url, _TypeState())
        names = _subscription(request)
        self.report(Subscribed(request.type_url, None if names is None else tuple(sorted(names))))
        if not request.response_nonce:
            state.names = names
            if names is None and snapshot is not None and request.version_info:
                typed = snapshot.of(request.type_url)
                if typed.version == request.version_info:  # Envoy holds this content
                    state.sent_key = typed.content_key(None)
                    state.sent_version = typed.version
                    self.report(Acked(request.type_url, typed.version))
                    return []
            return self._respond(request.type_url, state, snapshot)
        if request.response_nonce != state.sent_nonce:
            return []  # stale: a newer response is in flight
        state.awaiting_reply = False
        names_changed = names != state.names
        state.names = names
        if request.error_message is not None:
            state.nacked_key = state.sent_key
            self.report(Nacked(request.type_url, state.sent_version, request.error_message))
            return self._respond(request.type_url, state, snapshot) if names_changed else []
        if state.acked_nonce == request.response_nonce:
            return self._respond(request.type_url, state, snapshot)  # re-subscribe
        state.acked_nonce = request.response_nonce
        self.report(Acked(request.type_url, request.version_info))
        if names_changed:
            return self._respond(request.type_url, state, snapshot)
        return self._respond_if_changed(request.type_url, state, snapshot)

    def on_snapshot(self, snapshot: Snapshot) -> list[Response]:
        responses: list[Response] = []
        for type_url, state in self._types.items():
            if state.awaiting_reply:
                continue
            if state.wants_response:
                responses += self._respond(type_url, state, snapshot)
            else:
                responses += self._respond_if_changed(type_url, state, snapshot)
        return responses

    def _respond_if_changed(
        self, type_url: str, state: _TypeState, snapshot: Snapshot | None
    ) -> list[Response]:
        if snapshot is None:
            return []
        key = snapshot.of(type_url).content_key(state.names)
        if key == state.sent_key or key == state.nacked_key:
            return []
        return self._respond(type_url, state, snapshot)

    def _respond(
        self, type_url: str, state: _TypeState, snapshot: Snapshot | None
    ) -> list[Response]:
        if snapshot is None:
            state.wants_response = True
            return []
        typed = snapshot.of(type_url)
        key = typed.content_key(state.names)
        self._nonce += 1
        nonce = str(self._nonce)
        state.wants_response = False
        state.awaiting_reply = True
        state.sent_nonce = nonce
        state.sent_key = key
        state.sent_version = typed.version
        self.report(Sent(type_url, typed.version, nonce))
        return [Response(type_url, typed.version, nonce, tuple(typed.resources[n] for n, _ in key))]


def _subscription(request: Request) -> frozenset[str] | None:
    names = frozenset(request.resource_names)
    if "*" in names or (not names and request.type_url in type_urls.WILDCARD_TYPES):
        return None
    return names
