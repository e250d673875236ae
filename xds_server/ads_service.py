"""gRPC glue: Envoy ADS streams <-> the protocol state machines (SotW and Delta).

Served with ``grpc.aio`` through a generic handler for
``envoy.service.discovery.v3.AggregatedDiscoveryService``; requests are
parsed with Envoy's protobuf types (:mod:`xds_server.envoy_types`), responses are written as
bytes by :mod:`xds_server.wire` around each resource's once-serialized body.
Each stream is one task: requests and snapshot changes are queued to it, and
it alone touches its state machine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog

from wsfleet.fleet_ca import NodeIdentity, node_identity, node_proven_by
from xds_server import type_urls, wire
from xds_server.builders import NodeGroup
from xds_server.delta import DeltaRequest, DeltaResponse, DeltaStream
from xds_server.edge_routes import EdgeRoutes
from xds_server.envoy_types import DeltaDiscoveryRequest, DiscoveryRequest
from xds_server.ledger import Ledger, NodeStatus
from xds_server.metrics import XdsMetrics
from xds_server.outcomes import Acked, Nacked, Outcome, Sent, Subscriber
from xds_server.snapshot import DEFAULT_GROUP, Snapshot
from xds_server.snapshot_cache import SnapshotCache
from xds_server.sotw import Request, Response, SotwStream

log = structlog.get_logger()

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
MAX_GROUPS = 256  # regions with Envoys connected at once; a snapshot is built for each
_END = object()
_stream_ids = itertools.count(1)


class Machine(Protocol):
    """A protocol state machine: :class:`SotwStream` or :class:`DeltaStream`."""

    def on_request(self, request: Any, snapshot: Snapshot | None) -> list[Any]: ...

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]: ...


@dataclass(frozen=True)
class _Protocol:
    name: str
    machine: Callable[[Subscriber], Machine]  # made with the outcomes' subscriber
    parse: Callable[[Any], Any]  # protobuf request -> state-machine request
    encode: Callable[[Any], bytes]  # state-machine response -> wire bytes


LISTENER_PORT_KEY = "wsfleet.listener_port"
"""Node metadata: the port this Envoy's client listener takes instead of the policy's
(several Envoys on one host). Absent: the policy's port."""


def node_group(node: Any) -> str:
    """Envoys are grouped by the region of their locality (none: the default group) and
    the listener port their metadata asks for; raises ValueError for a port that is not
    one."""
    region, _ = _locality(node)
    fields = node.metadata.fields
    port = None
    if LISTENER_PORT_KEY in fields:
        value = fields[LISTENER_PORT_KEY]
        number = value.number_value if value.WhichOneof("kind") == "number_value" else None
        if number is None or not 1 <= number <= 65535 or number != int(number):
            raise ValueError(f"node metadata {LISTENER_PORT_KEY} must be a port (1-65535)")
        port = int(number)
    return NodeGroup(region or None, port).key


def _locality(node: Any) -> tuple[str, str]:
    return str(node.locality.region), str(node.locality.zone)


def _envoy_version(node: Any) -> str:
    if node.WhichOneof("user_agent_version_type") == "user_agent_build_version":
        version = node.user_agent_build_version.version
        return f"{version.major_number}.{version.minor_number}.{version.patch}"
    return str(node.user_agent_version)


def _error(message: Any) -> str | None:
    if not message.HasField("error_detail"):
        return None
    error = message.error_detail
    return error.message or f"code {error.code}"


def parse_sotw(message: Any) -> Request:
    return Request(
        type_url=message.type_url,
        version_info=message.version_info,
        resource_names=tuple(message.resource_names),
        response_nonce=message.response_nonce,
        error_message=_error(message),
    )


def parse_delta(message: Any) -> DeltaRequest:
    return DeltaRequest(
        type_url=message.type_url,
        subscribe=tuple(message.resource_names_subscribe),
        unsubscribe=tuple(message.resource_names_unsubscribe),
        initial_versions=dict(message.initial_resource_versions),
        response_nonce=message.response_nonce,
        error_message=_error(message),
    )


def encode_sotw(response: Response) -> bytes:
    return wire.discovery_response(
        response.version, response.type_url, response.nonce, (r.body for r in response.resources)
    )


def encode_delta(response: DeltaResponse) -> bytes:
    return wire.delta_discovery_response(
        response.system_version,
        response.type_url,
        response.nonce,
        ((r.name, r.version, r.body) for r in response.resources),
        response.removed,
    )


SOTW = _Protocol("sotw", SotwStream, parse_sotw, encode_sotw)
DELTA = _Protocol("delta", DeltaStream, parse_delta, encode_delta)


class AdsService:
    """Serves SotW and Delta ADS streams from a :class:`SnapshotCache`."""

    def __init__(
        self,
        cache: SnapshotCache,
        ledger: Ledger,
        metrics: XdsMetrics,
        on_new_group: Callable[[str], None] = lambda group: None,
        require_identity: bool = False,
        on_group_gone: Callable[[str], None] = lambda group: None,
        max_groups: int = MAX_GROUPS,
        clock: Callable[[], float] = time.time,
        edges: EdgeRoutes | None = None,
    ) -> None:
        self._cache = cache
        self._edges = EdgeRoutes() if edges is None else edges  # each node's own RDS
        self._streams_by_node: collections.Counter[str] = collections.Counter()
        self._clock = clock  # the ledger's times (Unix seconds)
        self._ledger = ledger
        self._metrics = metrics
        self._on_new_group = on_new_group
        self._on_group_gone = on_group_gone
        self._max_groups = max_groups
        self._streams_by_group: collections.Counter[str] = collections.Counter()
        # mTLS: a node must be the one its client certificate names (id and region)
        self._require_identity = require_identity

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_sotw,
                    request_deserializer=DiscoveryRequest.FromString,
                    response_serializer=bytes,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_delta,
                    request_deserializer=DeltaDiscoveryRequest.FromString,
                    response_serializer=bytes,
                ),
            },
        )

    # grpc.aio streams responses from async generator functions (not plain functions)
    async def stream_sotw(self, requests: AsyncIterator[Any], context: Any) -> AsyncIterator[bytes]:
        async for response in self._serve(requests, SOTW, context):
            yield response

    async def stream_delta(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[bytes]:
        async for response in self._serve(requests, DELTA, context):
            yield response

    async def _refuse_unproven(self, node: Any, context: Any) -> None:
        """With mTLS, abort a stream whose node is not one its certificate proves (its
        name, or a pod of the Deployment it names: :func:`~wsfleet.fleet_ca.node_proven_by`)
        or whose region is not the certificate's."""
        certs = (context.auth_context() or {}).get("x509_pem_cert") or [b""]
        identity = node_identity(certs[0])
        claimed = NodeIdentity(str(node.id), str(node.locality.region))
        if (
            identity is None
            or identity.region != claimed.region
            or not node_proven_by(claimed.node_id, identity.node_id)
        ):
            self._metrics.refused_nodes.inc()
            log.warning(
                "ads_node_refused",
                claimed_node=claimed.node_id,
                claimed_region=claimed.region,
                certificate=f"{identity.node_id}/{identity.region}" if identity else None,
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "the node id (or a pod of the Deployment it names) and region must be "
                "those of the client certificate",
            )

    async def _serve(
        self, requests: AsyncIterator[Any], protocol: _Protocol, context: Any
    ) -> AsyncIterator[bytes]:
        events: asyncio.Queue[object] = asyncio.Queue()
        stream_id = next(_stream_ids)
        reader = asyncio.create_task(_pump(requests, events))
        watcher: asyncio.Task[None] | None = None
        machine: Machine | None = None
        status: NodeStatus | None = None
        group = DEFAULT_GROUP
        node_id = ""
        bound = log.bind(stream_id=stream_id, protocol=protocol.name)
        try:
            while True:
                event = await events.get()
                if event is _END:
                    return
                if isinstance(event, BaseException):
                    bound.info("ads_stream_error", error=str(event))
                    return
                if isinstance(event, int):  # a snapshot generation
                    if machine is None:
                        continue
                    snapshot = self._edges.for_node(self._cache.get(group), node_id)
                    responses = machine.on_snapshot(snapshot) if snapshot else []
                else:
                    if machine is None:
                        request: Any = event  # a DiscoveryRequest or DeltaDiscoveryRequest
                        node = request.node  # empty if the request has none
                        if self._require_identity:
                            await self._refuse_unproven(node, context)
                        try:
                            group = node_group(node)
                        except ValueError as exc:
                            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                        if (
                            group not in self._streams_by_group
                            and len(self._streams_by_group) >= self._max_groups
                        ):
                            await context.abort(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"at most {self._max_groups} regions have Envoys at once",
                            )
                        self._streams_by_group[group] += 1
                        node_id = str(node.id) or f"anonymous-{stream_id}"
                        self._streams_by_node[node_id] += 1
                        status = self._ledger.open(
                            node_id,
                            group,
                            protocol.name,
                            _envoy_version(node),
                            self._clock(),
                            _locality(node),
                        )
                        machine = protocol.machine(functools.partial(self._record, status))
                        bound = bound.bind(node_id=node_id)
                        bound.info("ads_stream_opened", group=group)
                        self._metrics.connected_nodes.labels(protocol.name).inc()
                        self._on_new_group(group)
                        watcher = asyncio.create_task(self._watch(events))
                    assert status is not None
                    status.last_seen = self._clock()
                    snapshot = self._edges.for_node(self._cache.get(group), node_id)
                    responses = machine.on_request(protocol.parse(event), snapshot)
                for response in responses:
                    yield protocol.encode(response)
        finally:
            reader.cancel()
            if watcher is not None:
                watcher.cancel()
            for task in (reader, watcher):
                if task is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if status is not None:
                self._ledger.close(status)
                self._metrics.connected_nodes.labels(protocol.name).dec()
                bound.info("ads_stream_closed")
                self._streams_by_group[group] -= 1
                self._streams_by_node[node_id] -= 1
                if self._streams_by_node[node_id] <= 0:
                    del self._streams_by_node[node_id]
                    self._edges.forget(node_id)
                if self._streams_by_group[group] <= 0:
                    del self._streams_by_group[group]
                    self._on_group_gone(group)

    def _record(self, status: NodeStatus, outcome: Outcome) -> None:
        """An outcome a stream's state machine reported: into the ledger, then metrics."""
        status.apply(outcome, self._clock())
        short = _short(outcome.type_url)
        if isinstance(outcome, Sent):
            self._metrics.pushes.labels(short).inc()
        elif isinstance(outcome, Acked):
            self._metrics.acks.labels(short).inc()
            latency = status.of(outcome.type_url).last_ack_latency_s
            self._metrics.push_to_ack.labels(short).observe(latency)
        elif isinstance(outcome, Nacked):
            self._metrics.nacks.labels(short).inc()
            log.warning(
                "xds_nack",
                node_id=status.node_id,
                type=short,
                version=outcome.version,
                message=outcome.message,
            )

    async def _watch(self, events: asyncio.Queue[object]) -> None:
        generation = self._cache.generation
        while True:
            generation = await self._cache.wait_past(generation)
            events.put_nowait(generation)


def _short(type_url: str) -> str:
    return type_urls.SHORT_NAMES.get(type_url, "other")


async def _pump(requests: AsyncIterator[Any], events: asyncio.Queue[object]) -> None:
    try:
        async for request in requests:
            events.put_nowait(request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the stream broke: tell the loop, which ends it
        events.put_nowait(exc)
        return
    events.put_nowait(_END)
