"""Registry records and the interface every backend implements."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import zlib
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Protocol


class PodState(StrEnum):
    """A gateway pod's state as Envoy should see it."""

    SERVING = "serving"  # takes new sessions (EDS HEALTHY)
    DRAINING = "draining"  # closing its sessions, takes no new ones (EDS DRAINING)
    DRAINED = "drained"  # alive, holds no session, takes none (EDS DRAINING) until undrained

    @property
    def takes_sessions(self) -> bool:
        return self is PodState.SERVING


@dataclasses.dataclass(frozen=True, slots=True)
class PodRecord:
    """One gateway pod, as it registers itself."""

    pod_id: str
    pool: str
    host: str
    port: int
    admin_port: int
    state: PodState = PodState.SERVING
    region: str = "local"
    zone: str = "local-a"
    conns: int = 0
    transports: str = ""  # connections per transport: "websocket=10,sse=2"
    started_at: float = 0.0
    heartbeat_at: float = 0.0

    def to_fields(self) -> dict[str, str]:
        """Flat string fields, as stored in a Redis hash."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def connections_by_transport(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.transports.split(","):
            name, _, count = item.partition("=")
            if name and count.isdigit():
                counts[name] = int(count)
        return counts

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> PodRecord:
        """Parse what :meth:`to_fields` wrote; raises ``ValueError`` on a bad record."""
        try:
            return cls(
                pod_id=fields["pod_id"],
                pool=fields["pool"],
                host=fields["host"],
                port=int(fields["port"]),
                admin_port=int(fields["admin_port"]),
                state=PodState(fields.get("state", PodState.SERVING)),
                region=fields.get("region", "local"),
                zone=fields.get("zone", "local-a"),
                conns=int(fields.get("conns", "0")),
                transports=fields.get("transports", ""),
                started_at=float(fields.get("started_at", "0")),
                heartbeat_at=float(fields.get("heartbeat_at", "0")),
            )
        except KeyError as missing:
            raise ValueError(f"pod record lacks field {missing}") from None


def user_bucket(user_id: str) -> str:
    """4 hex digits from the user id: the hash tag that keeps a user's connection
    records in one Redis Cluster slot with the user's set."""
    return f"{zlib.crc32(user_id.encode()) & 0xFFFF:04x}"


def new_connection_id(user_id: str) -> str:
    """A new connection id: its user's bucket, then 112 random bits (32 hex digits in
    all), so the id alone says where its record lives."""
    return user_bucket(user_id) + os.urandom(14).hex()


@dataclasses.dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """One client connection: who, where (``shard`` = pod id), how, since when."""

    connection_id: str
    user_id: str
    shard: str
    backend_routing_key: str
    transport: str
    connected_at: float
    last_ping: float = 0.0

    @staticmethod
    def field_names() -> tuple[str, ...]:
        return _CONNECTION_FIELDS

    def field_values(self) -> tuple[str, ...]:
        """The fields' values as strings, in :meth:`field_names` order."""
        return (
            self.connection_id,
            self.user_id,
            self.shard,
            self.backend_routing_key,
            self.transport,
            str(self.connected_at),
            str(self.last_ping),
        )

    def to_fields(self) -> dict[str, str]:
        return dict(zip(_CONNECTION_FIELDS, self.field_values(), strict=True))

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ConnectionRecord:
        try:
            return cls(
                connection_id=fields["connection_id"],
                user_id=fields["user_id"],
                shard=fields["shard"],
                backend_routing_key=fields.get("backend_routing_key", ""),
                transport=fields.get("transport", ""),
                connected_at=float(fields.get("connected_at", "0")),
                last_ping=float(fields.get("last_ping", "0")),
            )
        except KeyError as missing:
            raise ValueError(f"connection record lacks field {missing}") from None


_CONNECTION_FIELDS = tuple(f.name for f in dataclasses.fields(ConnectionRecord))


@dataclasses.dataclass(frozen=True, slots=True)
class HashSources:
    """Where Envoy finds the user id it hashes a pool's clients on, in the order it looks
    (the first one present is used): a header, a query parameter, a cookie (None: not that
    one). The control plane writes them from the routing policy (its ``hash_key``); the
    gateways read them and check the same value against the token's subject, so the
    policy is their one definition."""

    header: str | None = None
    query_parameter: str | None = None
    cookie: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HashSources:
        """Parse what :meth:`to_json` wrote; raises ``ValueError`` on anything else."""
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("hash sources are not JSON") from None
        if not isinstance(fields, dict) or set(fields) - {"header", "query_parameter", "cookie"}:
            raise ValueError("hash sources name unknown fields")
        values = [fields.get(name) for name in ("header", "query_parameter", "cookie")]
        if not all(value is None or isinstance(value, str) for value in values):
            raise ValueError("hash sources must be names")
        return cls(*values)


@dataclasses.dataclass(frozen=True, slots=True)
class EdgeDrain:
    """An Envoy being drained (``POST /envoys/drain``): fleet-wide state, so every
    control-plane replica serves that Envoy the same draining routes and any replica can
    report it. ``started_at`` is Unix seconds; its routes turn to 503 at once, the gateways
    start closing its connections ``delist_s`` later, over ``budget_s``."""

    node: str
    zone: str
    budget_s: float
    delist_s: float
    started_at: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EdgeDrain:
        """Parse what :meth:`to_json` wrote; raises ``ValueError`` on anything else."""
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):
            raise ValueError("an edge drain is not JSON") from None
        names = {"node", "zone", "budget_s", "delist_s", "started_at"}
        if not isinstance(fields, dict) or set(fields) != names:
            raise ValueError(f"an edge drain has exactly the fields {sorted(names)}")
        numbers = [fields[name] for name in ("budget_s", "delist_s", "started_at")]
        if not all(isinstance(fields[name], str) for name in ("node", "zone")) or not all(
            isinstance(n, int | float) and not isinstance(n, bool) for n in numbers
        ):
            raise ValueError("an edge drain's node and zone are strings, its times numbers")
        return cls(fields["node"], fields["zone"], *(float(n) for n in numbers))


MAX_ENVOYS = 10_000  # Envoy presence records kept per replica and read in all
MAX_PRESENCE_CHARS = 256  # each text field of a presence record


@dataclasses.dataclass(frozen=True, slots=True)
class EnvoyPresence:
    """An Envoy streaming from a control-plane replica, as that replica publishes it, so
    every replica knows every Envoy (``GET /envoys``, a drain by node or zone sent to any
    replica). ``connected_at`` and ``seen_at`` are the publishing replica's Unix seconds."""

    node: str
    zone: str
    region: str
    envoy_version: str
    connected_at: float
    replica: str  # the control plane the Envoy's ADS stream is open to
    seen_at: float  # when that replica last published it

    def to_plain(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_plain(cls, fields: object) -> EnvoyPresence:
        """Parse what :meth:`to_plain` gave (after a JSON round trip); raises
        ``ValueError`` on anything else, or a text field over ``MAX_PRESENCE_CHARS``."""
        texts = ("node", "zone", "region", "envoy_version", "replica")
        times = ("connected_at", "seen_at")
        if not isinstance(fields, dict) or set(fields) != {*texts, *times}:
            raise ValueError(f"an Envoy presence has exactly the fields {sorted({*texts, *times})}")
        if not all(
            isinstance(fields[name], str) and len(fields[name]) <= MAX_PRESENCE_CHARS
            for name in texts
        ):
            raise ValueError(
                f"an Envoy presence's names are strings of {MAX_PRESENCE_CHARS} or less"
            )
        if not all(
            isinstance(fields[name], int | float) and not isinstance(fields[name], bool)
            for name in times
        ):
            raise ValueError("an Envoy presence's times are numbers")
        node, zone, region, envoy_version, replica = (str(fields[name]) for name in texts)
        connected_at, seen_at = (float(fields[name]) for name in times)
        return cls(node, zone, region, envoy_version, connected_at, replica, seen_at)


def presences_to_json(envoys: list[EnvoyPresence]) -> str:
    """One replica's published Envoys, as stored (at most ``MAX_ENVOYS``)."""
    return json.dumps([envoy.to_plain() for envoy in envoys[:MAX_ENVOYS]])


def presences_from_json(text: str, replica: str) -> list[EnvoyPresence]:
    """What :func:`presences_to_json` wrote for ``replica``: records that are malformed or
    name another replica are skipped, and more than ``MAX_ENVOYS`` ignored."""
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if not isinstance(items, list):
        return []
    envoys = []
    for item in items[:MAX_ENVOYS]:
        with contextlib.suppress(ValueError):
            envoy = EnvoyPresence.from_plain(item)
            if envoy.replica == replica:
                envoys.append(envoy)
    return envoys


def check_lease(name: str, holder: str, ttl_s: float) -> None:
    """What :meth:`Registry.hold_lease` takes: a name, a holder and a positive TTL."""
    if not name or not holder:
        raise ValueError("a lease needs a name and a holder")
    if not (ttl_s > 0 and math.isfinite(ttl_s)):
        raise ValueError(f"a lease's ttl_s must be a positive number of seconds, not {ttl_s!r}")


class QuotaExceeded(Exception):
    """The user already holds the most connections allowed."""


class RegistryUnavailable(Exception):
    """The registry's store cannot be reached right now."""


class Registry(Protocol):
    """What the control plane and the gateways need from the registry."""

    async def put_pod(self, pod: PodRecord, ttl_s: float) -> bool:
        """Create or refresh a pod; it disappears unless refreshed within ``ttl_s``.

        Returns True if the pod was already registered (False: new, or its record was lost,
        e.g. the store restarted empty: whoever owns it should write its state again)."""

    async def remove_pod(self, pod_id: str) -> None:
        """Remove a pod at once (clean shutdown)."""

    async def list_pods(self, pool: str | None = None) -> list[PodRecord]:
        """Live pods (refreshed within their TTL), optionally of one pool, by pod id."""

    async def get_pod(self, pod_id: str) -> PodRecord | None:
        """One live pod, or None if it is gone (removed or expired)."""

    async def live_pod_ids(self) -> set[str]:
        """Ids of the live pods: cheaper than :meth:`list_pods` when only presence matters."""

    def membership_changes(self) -> AsyncIterator[str]:
        """Yields a pod id each time a pod registers, changes state or leaves.

        Expiry of a silent pod is not announced: readers also poll
        :meth:`list_pods` on an interval.
        """

    async def add_connections(
        self, records: list[ConnectionRecord], ttl_s: float, max_per_user: int
    ) -> set[str]:
        """Record connections (one round trip for all), in order, each refused when its user
        already has ``max_per_user`` live connections fleet-wide (0: no limit; the check is
        then skipped). Returns the ids of the refused ones."""

    async def remove_connections(self, records: list[ConnectionRecord]) -> None:
        """Forget closed connections (one round trip for all)."""

    async def touch_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        """Refresh many connections at once, ``last_ping`` and TTLs (one round trip)."""

    async def put_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        """Write whole records (a pod re-syncing its set after a registry outage)."""

    async def put_hash_sources(self, pools: dict[str, HashSources]) -> None:
        """Record where Envoy hashes each pool's users (the control plane, from its policy)."""

    async def get_hash_sources(self, pool: str) -> HashSources | None:
        """Where Envoy hashes ``pool``'s users; None until the control plane has said."""

    async def put_channel_config(self, text: str) -> None:
        """Record the channel namespaces (the control plane, from its policy; JSON of
        :class:`~wsfleet.channels.namespaces.ChannelsConfig`)."""

    async def get_channel_config(self) -> str | None:
        """The channel namespaces as written; None until the control plane has said."""

    async def put_edge_drain(self, drain: EdgeDrain) -> None:
        """Record that an Envoy drains (replacing an earlier record of the same node)."""

    async def remove_edge_drain(self, node: str) -> bool:
        """The Envoy serves again; False if it was not draining."""

    async def edge_drains(self) -> dict[str, EdgeDrain]:
        """Every Envoy draining, by node id (one read; a malformed record is skipped)."""

    async def put_envoys(self, replica: str, envoys: list[EnvoyPresence], ttl_s: float) -> None:
        """Publish the Envoys connected to control-plane replica ``replica`` (at most
        ``MAX_ENVOYS``), replacing what it published before; they are forgotten unless
        published again within ``ttl_s`` (an empty list forgets them at once)."""

    async def envoys(self) -> list[EnvoyPresence]:
        """The Envoys every replica published and has refreshed within its TTL, by replica
        then node id (at most ``MAX_ENVOYS`` in all; a malformed record is skipped)."""

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or keep the lease ``name`` for ``holder``; True if ``holder`` holds it now.

        Taken when free or expired, kept (its ``ttl_s`` started again) when ``holder``
        holds it already, refused while another holder's has not expired: a holder that
        stops calling loses it ``ttl_s`` later (so one control-plane replica at a time
        exports the fleet-wide metrics). ``ValueError`` for an empty name or holder or a
        ``ttl_s`` that is not positive."""

    async def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        """A live connection, or None."""

    async def connections_of_user(self, user_id: str) -> list[ConnectionRecord]:
        """The user's live connections, on any pod."""

    async def connections_of_pod(self, pod_id: str) -> list[ConnectionRecord]:
        """The pod's live connections."""

    async def ping(self) -> None:
        """Raise :class:`RegistryUnavailable` unless the store answers."""

    async def close(self) -> None:
        """Release connections."""
