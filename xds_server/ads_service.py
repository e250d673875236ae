"""gRPC glue: Envoy ADS streams <-> the protocol state machines.

Served with ``grpc.aio`` through a generic handler for
``envoy.service.discovery.v3.AggregatedDiscoveryService``; requests are
parsed with envoy-data-plane's betterproto2 types, responses are written as
bytes by :mod:`xds_server.wire` around each resource's once-serialized body.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog

from xds_server import type_urls, wire
from xds_server.envoy_types import DiscoveryRequest
from xds_server.ledger import Ledger, NodeStatus
from xds_server.metrics import XdsMetrics
from xds_server.snapshot import DEFAULT_GROUP, SnapshotCache
from xds_server.sotw import Request, Response, SotwStream

log = structlog.get_logger()

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_END = object()
_stream_ids = itertools.count(1)


def node_group(node: Any) -> str:
    """Envoys are grouped by their ``node.cluster``; no cluster means the default group."""
    cluster = getattr(node, "cluster", "") if node is not None else ""
    return str(cluster) or DEFAULT_GROUP


def _envoy_version(node: Any) -> str:
    build = getattr(node, "user_agent_build_version", None)
    version = getattr(build, "version", None)
    if version is not None:
        return ".".join(
            str(getattr(version, part, 0)) for part in ("major_number", "minor_number", "patch")
        )
    return str(getattr(node, "user_agent_version", "") or "")


def to_request(message: Any) -> Request:
    error = message.error_detail
    return Request(
        type_url=message.type_url,
        version_info=message.version_info,
        resource_names=tuple(message.resource_names),
        response_nonce=message.response_nonce,
        error_message=(error.message or f"code {error.code}") if error is not None else None,
    )


class AdsService:
    """Serves SotW ADS streams from a :class:`SnapshotCache`."""

    def __init__(self, cache: SnapshotCache, ledger: Ledger, metrics: XdsMetrics) -> None:
        self._cache = cache
        self._ledger = ledger
        self._metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_sotw,
                    request_deserializer=DiscoveryRequest.parse,
                    response_serializer=bytes,
                ),
            },
        )

    async def stream_sotw(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        events: asyncio.Queue[object] = asyncio.Queue()
        stream_id = next(_stream_ids)
        reader = asyncio.create_task(_pump(requests, events))
        watcher: asyncio.Task[None] | None = None
        status: NodeStatus | None = None
        machine: SotwStream | None = None
        group = DEFAULT_GROUP
        bound = log.bind(stream_id=stream_id, protocol="sotw")
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
                    snapshot = self._cache.get(group)
                    responses = machine.on_snapshot(snapshot) if snapshot else []
                else:
                    if machine is None:
                        node = getattr(event, "node", None)
                        group = node_group(node)
                        node_id = str(getattr(node, "id", "") or f"anonymous-{stream_id}")
                        status = self._ledger.open(node_id, group, "sotw", _envoy_version(node))
                        machine = SotwStream(status)
                        bound = bound.bind(node_id=node_id)
                        bound.info("ads_stream_opened", group=group)
                        self._metrics.connected_nodes.labels("sotw").inc()
                        watcher = asyncio.create_task(self._watch(events))
                    assert status is not None
                    status.last_seen = time.time()
                    request = to_request(event)
                    typed = status.of(request.type_url)
                    acks, nacks = typed.acks, typed.nacks
                    responses = machine.on_request(request, self._cache.get(group))
                    self._count_replies(status, request.type_url, acks, nacks)
                for response in responses:
                    yield self._encode(response)
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
                self._metrics.connected_nodes.labels("sotw").dec()
                bound.info("ads_stream_closed")

    def _count_replies(self, status: NodeStatus, type_url: str, acks: int, nacks: int) -> None:
        """Turn the ledger's ACK/NACK counts, before and after a request, into metrics."""
        typed = status.of(type_url)
        short = type_urls.SHORT_NAMES.get(type_url, "other")
        if typed.acks > acks:
            self._metrics.acks.labels(short).inc()
            self._metrics.push_to_ack.labels(short).observe(typed.last_ack_latency_s)
        if typed.nacks > nacks:
            self._metrics.nacks.labels(short).inc()
            log.warning(
                "xds_nack",
                node_id=status.node_id,
                type=short,
                version=typed.nacked_version,
                message=typed.nack_message,
            )

    def _encode(self, response: Response) -> bytes:
        self._metrics.pushes.labels(type_urls.SHORT_NAMES.get(response.type_url, "other")).inc()
        return wire.discovery_response(
            response.version,
            response.type_url,
            response.nonce,
            (resource.body for resource in response.resources),
        )

    async def _watch(self, events: asyncio.Queue[object]) -> None:
        generation = self._cache.generation
        while True:
            generation = await self._cache.wait_past(generation)
            events.put_nowait(generation)


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
