"""A simulated Envoy: one ADS stream (SotW or Delta) that subscribes and ACKs.

It reads only the response envelope (version, type, nonce, resource names)
with a tiny protobuf reader, so that 200 of them in one process measure the
server, not the client's parsing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc

from xds_server import type_urls
from xds_server.envoy_types import DeltaDiscoveryRequest, DiscoveryRequest, message_class

Node = message_class("envoy.config.core.v3.Node")

SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, bytes | int]]:
    """(field number, value) of a protobuf message: bytes for length-delimited, else int."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, pos = _varint(data, pos)
            yield number, data[pos : pos + length]
            pos += length
        elif wire_type == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire_type}")


@dataclass
class Envelope:
    version: str = ""
    type_url: str = ""
    nonce: str = ""
    names: list[str] = field(default_factory=list)


def read_sotw(data: bytes) -> Envelope:
    envelope = Envelope()
    for number, value in fields(data):
        if number == 1 and isinstance(value, bytes):
            envelope.version = value.decode()
        elif number == 4 and isinstance(value, bytes):
            envelope.type_url = value.decode()
        elif number == 5 and isinstance(value, bytes):
            envelope.nonce = value.decode()
    return envelope


def read_delta(data: bytes) -> Envelope:
    envelope = Envelope()
    for number, value in fields(data):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            envelope.version = value.decode()
        elif number == 4:
            envelope.type_url = value.decode()
        elif number == 5:
            envelope.nonce = value.decode()
        elif number == 2:
            for inner, item in fields(value):
                if inner == 3 and isinstance(item, bytes):
                    envelope.names.append(item.decode())
    return envelope


@dataclass
class SimulatedEnvoy:
    """Subscribes to CDS, EDS (one pool), LDS and RDS; records when each EDS version arrives."""

    node_id: str
    address: str
    delta: bool
    pool: str = "gateways"
    route: str = "public"
    eds_versions: list[tuple[float, str]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def _first_requests(self) -> list[bytes]:
        node = Node(id=self.node_id, cluster="bench")
        wanted = [
            (type_urls.CLUSTER, []),
            (type_urls.ENDPOINT, [self.pool]),
            (type_urls.LISTENER, []),
            (type_urls.ROUTE, [self.route]),
        ]
        requests = []
        for index, (type_url, names) in enumerate(wanted):
            message: DeltaDiscoveryRequest | DiscoveryRequest
            if self.delta:
                message = DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names)
            else:
                message = DiscoveryRequest(type_url=type_url, resource_names=names)
            if index == 0:
                message.node.CopyFrom(node)
            requests.append(message.SerializeToString())
        return requests

    def _ack(self, envelope: Envelope) -> bytes:
        if self.delta:
            ack = DeltaDiscoveryRequest(type_url=envelope.type_url, response_nonce=envelope.nonce)
            return ack.SerializeToString()
        names = (
            [self.pool]
            if envelope.type_url == type_urls.ENDPOINT
            else ([self.route] if envelope.type_url == type_urls.ROUTE else [])
        )
        return DiscoveryRequest(
            type_url=envelope.type_url,
            version_info=envelope.version,
            resource_names=names,
            response_nonce=envelope.nonce,
        ).SerializeToString()

    async def run(self, stop: asyncio.Event) -> None:
        outbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        for request in self._first_requests():
            outbox.put_nowait(request)

        async def requests() -> AsyncIterator[bytes]:
            while True:
                item = await outbox.get()
                if item is None:
                    return
                yield item

        reader = read_delta if self.delta else read_sotw
        async with grpc.aio.insecure_channel(self.address) as channel:
            call = channel.stream_stream(
                DELTA_METHOD if self.delta else SOTW_METHOD,
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )(requests())
            stopper = asyncio.create_task(stop.wait())
            seen_types: set[str] = set()
            try:
                while not stop.is_set():
                    getting = asyncio.ensure_future(call.read())
                    done, _ = await asyncio.wait(
                        {getting, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getting not in done:
                        getting.cancel()
                        break
                    raw = getting.result()
                    if raw is grpc.aio.EOF:
                        break
                    envelope = reader(raw)
                    if envelope.type_url == type_urls.ENDPOINT:
                        self.eds_versions.append((time.monotonic(), envelope.version))
                    seen_types.add(envelope.type_url)
                    if len(seen_types) >= 4:
                        self.ready.set()
                    outbox.put_nowait(self._ack(envelope))
            finally:
                outbox.put_nowait(None)
                stopper.cancel()
                call.cancel()
