"""Run the control plane: ADS over gRPC, admin over HTTP, until SIGTERM/SIGINT.

Start: read the policy and the keys, open the registry, tell the gateways the policy,
read the pods and publish the first snapshot, listen for admin (the fleet-metrics lease is
held in the registry), serve xDS, start the loops. Stop: the same in reverse, declared once
on one ``AsyncExitStack`` (a startup error at any step closes what the steps before it
opened)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import structlog

from wsfleet import fleet_ca
from wsfleet.admin_token import read_admin_token
from wsfleet.bounded_files import UnreadableFile, read_bounded
from wsfleet.errors import ConfigError, StartupError
from wsfleet.process_shell import listen, open_registry, start_tasks
from wsfleet.readiness import write_ready
from wsfleet.registry import HashSources, RegistryUnavailable
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import read_registry_key
from wsfleet.settings import XdsSettings
from wsfleet.stop_signals import signal_events
from xds_server.admin import build_admin_app
from xds_server.ads_service import AdsService
from xds_server.edge_drains import EdgeDrains
from xds_server.edge_routes import EdgeRoutes
from xds_server.fleet_admin import FleetAdmin
from xds_server.ledger import Ledger
from xds_server.membership import Membership
from xds_server.membership_watcher import MembershipWatcher
from xds_server.metrics import FleetLease, XdsMetrics
from xds_server.pod_history import PodHistory
from xds_server.policy import Policy
from xds_server.policy_loader import PolicyBundle, default_bundle, load_bundle
from xds_server.policy_watcher import PolicyWatcher
from xds_server.publisher import SnapshotPublisher
from xds_server.snapshot_cache import SnapshotCache

log = structlog.get_logger()


def load_initial_bundle(settings: XdsSettings) -> PolicyBundle:
    if settings.policy_path is None:
        return _with_overrides(default_bundle(), settings)
    return _with_overrides(load_bundle(settings.policy_path), settings)


def _with_overrides(bundle: PolicyBundle, settings: XdsSettings) -> PolicyBundle:
    if settings.listener_port is not None:
        policy = bundle.policy.with_listener_port(settings.listener_port)
        bundle = dataclasses.replace(bundle, policy=policy)
    return withhold_plaintext_secrets(bundle, settings.tls_dir is not None, _plaintext_ok(settings))


def _plaintext_ok(settings: XdsSettings) -> bool:
    """``--insecure-plaintext-secrets``: serve SDS private keys over plain gRPC anyway."""
    return settings.insecure_plaintext_secrets


def withhold_plaintext_secrets(bundle: PolicyBundle, tls: bool, plaintext_ok: bool) -> PolicyBundle:
    """Without mTLS anyone who reaches the xDS port can ask for every SDS secret (the TLS
    private keys): unless told explicitly, serve none (listeners that need one wait for
    it, and the log says why)."""
    if tls or plaintext_ok or not bundle.certificates:
        return bundle
    log.warning(
        "xds_secrets_withheld",
        certificates=sorted(bundle.certificates),
        reason="xDS is plaintext (no --tls-dir): TLS private keys are not served; give "
        "--tls-dir, or --insecure-plaintext-secrets on a network only Envoys can reach",
    )
    return dataclasses.replace(bundle, certificates={})


def _warn_if_plaintext(settings: XdsSettings) -> None:
    """Say at start, loudly, that xDS is plaintext and what that means for secrets."""
    if settings.tls_dir is not None:
        return
    log.warning(
        "xds_plaintext",
        secrets="served (--insecure-plaintext-secrets)" if _plaintext_ok(settings) else "withheld",
        reason="no --tls-dir: any client that reaches the xDS port gets the configuration "
        "(and, with --insecure-plaintext-secrets, the TLS private keys); serve it over "
        "mutual TLS (wsfleet keygen) outside a trusted network",
    )


GRPC_STOP_GRACE_S = 1.0  # at stop, how long open xDS streams get to end on their own
MIN_CLIENT_PING_INTERVAL_MS = 10_000
"""Envoy pings its xDS connection every 15 s (the bootstrap's ``connection_keepalive``).
gRPC servers accept a ping only every 5 minutes while no data flows, and answer the third
early one with GOAWAY (too_many_pings): with the default, every Envoy lost its ADS stream
about every 65 s and re-fetched every resource. Pings up to this often are welcome."""

GRPC_SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
]


def _server_credentials(tls: Path | None) -> grpc.ServerCredentials | None:
    """mTLS from the fleet CA in ``tls`` (``wsfleet keygen``): only Envoys holding a client
    certificate of this CA are served. None: plain gRPC (a trusted network only)."""
    if tls is None:
        return None
    server = fleet_ca.files(tls, fleet_ca.SERVER_NAME)
    ca = fleet_ca.files(tls, fleet_ca.CA_NAME).cert
    try:
        key, cert, roots = (read_bounded(p, 256 * 1024) for p in (server.key, server.cert, ca))
    except UnreadableFile as exc:
        raise ConfigError(f"--tls-dir {tls}: {exc} (run wsfleet keygen)") from None
    return grpc.ssl_server_credentials([(key, cert)], roots, require_client_auth=True)


@dataclasses.dataclass(frozen=True)
class Plane:
    """The control plane's in-memory parts (they open nothing): what the Envoys were sent
    (ledger), the snapshots and their publisher, each Envoy's own routes, the pods seen."""

    metrics: XdsMetrics
    ledger: Ledger
    cache: SnapshotCache
    publisher: SnapshotPublisher
    history: PodHistory
    edges: EdgeRoutes

    @classmethod
    def build(cls, bundle: PolicyBundle) -> Plane:
        metrics, cache = XdsMetrics(), SnapshotCache()
        publisher = SnapshotPublisher(cache, metrics, bundle)
        return cls(metrics, Ledger(), cache, publisher, PodHistory(time.time), EdgeRoutes())

    async def on_membership(self, membership: Membership) -> None:
        self.publisher.set_membership(membership)
        self.history.observe(membership)


async def serve(settings: XdsSettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; raises :class:`StartupError` if it cannot start.

    Every step pushes what undoes it on one ``AsyncExitStack`` right after it opens, so a
    stop and a startup error at any step close what was opened, in reverse: the loops, the
    xDS streams (gRPC), the admin port (this replica's Envoys unlisted), the registry."""
    _warn_if_plaintext(settings)
    bundle = load_initial_bundle(settings)
    signer = read_registry_key(settings.registry_key_file)
    credentials = _server_credentials(settings.tls_dir)
    token = read_admin_token(settings.admin_token_file)
    async with contextlib.AsyncExitStack() as stack:
        registry = await open_registry(stack, settings.redis_url, settings.namespace, signer)
        plane = Plane.build(bundle)
        announcer = await announce_to_gateways(registry, plane.publisher)
        watcher = await follow_membership(settings, registry, plane)
        fleet_lease = FleetLease(registry, f"{socket.gethostname()}:{os.getpid()}")
        fleet = FleetAdmin(registry, token, plane.history, time.time, signer)
        edge_drains = EdgeDrains(registry, plane.ledger, plane.edges, plane.cache, fleet.call_pod)
        fleet.attach(edge_drains)
        admin_app = build_admin_app(
            plane.ledger,
            plane.metrics,
            plane.publisher,
            fleet,
            registry,
            token,
            settings.listener_port,
            fleet_lease,
        )
        admin_port = await listen(
            stack, admin_app, settings.admin_host, settings.admin_port, role="admin"
        )
        grpc_port = await start_grpc(stack, settings, plane, credentials)
        if signer is not None:
            plane.metrics.watch_rejections(lambda: signer.rejected)
        loops = [
            watcher.run(),
            announcer.run(settings.policy_poll_s),
            edge_drains.run(settings.membership_poll_s),
            *_policy_loops(settings, plane),
        ]
        start_tasks(stack, loops)
        stack.callback(log.info, "xds_server_stopping")
        write_ready(settings.ready_file, grpc_port=grpc_port, admin_port=admin_port)
        log.info("xds_server_started", grpc_port=grpc_port, admin_port=admin_port)
        await stop.wait()
    log.info("xds_server_stopped")


async def announce_to_gateways(
    registry: RedisRegistry, publisher: SnapshotPublisher
) -> GatewayAnnouncer:
    """Tell the gateways what the policy says (:class:`StartupError` if Redis refuses)."""
    announcer = GatewayAnnouncer(registry, lambda: publisher.policy)
    try:
        await announcer.announce()
    except RegistryUnavailable as exc:
        raise StartupError(f"cannot write to Redis: {exc}") from None
    return announcer


async def follow_membership(
    settings: XdsSettings, registry: RedisRegistry, plane: Plane
) -> MembershipWatcher:
    """Read the pods once and publish the first snapshot (empty pools if none)."""
    watcher = MembershipWatcher(registry, plane.on_membership, settings.membership_poll_s)
    await watcher.refresh()
    if plane.publisher.snapshot is None:
        plane.publisher.publish()
    return watcher


async def start_grpc(
    stack: contextlib.AsyncExitStack,
    settings: XdsSettings,
    plane: Plane,
    credentials: grpc.ServerCredentials | None,
) -> int:
    """Serve ADS on the xDS port (streams get :data:`GRPC_STOP_GRACE_S` to end when
    ``stack`` closes); the bound port. :class:`StartupError` when it cannot be had."""
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    ads = AdsService(
        plane.cache,
        plane.ledger,
        plane.metrics,
        on_new_group=plane.publisher.ensure_group,
        on_group_gone=plane.publisher.forget_group,
        require_identity=credentials is not None,
        edges=plane.edges,
    )
    server.add_generic_rpc_handlers([ads.handler()])
    plane.metrics.watch(plane.ledger, lambda: plane.publisher.bundle.certificates)
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    try:
        if credentials is None:
            port: int = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if not port:
        raise StartupError(f"cannot listen for xDS on {address} (port in use?)")
    await server.start()
    stack.push_async_callback(server.stop, GRPC_STOP_GRACE_S)
    return port


def _policy_loops(settings: XdsSettings, plane: Plane) -> list[Coroutine[Any, Any, None]]:
    """Follow the policy file (none without ``--policy``)."""
    if settings.policy_path is None:
        return []
    watcher = PolicyWatcher(
        settings.policy_path,
        lambda loaded: plane.publisher.set_bundle(_with_overrides(loaded, settings)),
        plane.metrics,
        poll_s=settings.policy_poll_s,
    )
    return [watcher.run()]


class GatewayAnnouncer:
    """Tells the gateways (and the server API), through the registry, what the policy says
    they must follow: where Envoy hashes each pool's users (``hash_key``) and the channel
    namespaces (``channels``); the policy is their one definition. Written at start, when
    the policy changes, and every :data:`REANNOUNCE_S` (a Redis that restarted empty learns
    it again)."""

    def __init__(self, registry: RedisRegistry, policy: Callable[[], Policy]) -> None:
        self._registry = registry
        self._policy = policy
        self._said: tuple[dict[str, HashSources], str] | None = None
        self._said_at = 0.0

    def _what(self) -> tuple[dict[str, HashSources], str]:
        policy = self._policy()
        pools = {pool.name: pool.hash_key.sources() for pool in policy.pools}
        return pools, policy.channels.to_json()

    async def announce(self) -> None:
        """Write every pool's hash sources and the channel namespaces; raises
        ``RegistryUnavailable``."""
        pools, channels = what = self._what()
        await self._registry.put_hash_sources(pools)
        await self._registry.put_channel_config(channels)
        self._said, self._said_at = what, time.monotonic()

    async def run(self, poll_s: float) -> None:
        while True:
            await asyncio.sleep(poll_s)
            if self._what() == self._said and time.monotonic() - self._said_at < REANNOUNCE_S:
                continue
            try:
                await self.announce()
            except RegistryUnavailable as exc:
                log.warning("gateway_settings_not_written", error=str(exc)[:200])


REANNOUNCE_S = 30.0


async def run(settings: XdsSettings) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop, _ = signal_events()
    await serve(settings, stop)
