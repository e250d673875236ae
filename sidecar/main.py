"""Sidecar lifecycle, declared once on one ``AsyncExitStack`` (every timeout a setting).

Start: verify settings, open the stores (registry, replay, channels), start the replay
writer, the channel hub and the backend links, listen (public + admin), register.
Stop (SIGTERM/SIGINT): drain over the budget, then, in reverse: stop the loops, leave the
registry (Envoy stops sending new clients), close every client left with 1001 going away,
stop listening, close the links, the hub, the replay writer and the stores. A startup
error at any step closes what the steps before it opened, the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import structlog

from sidecar.app import build_admin_app, build_public_app
from sidecar.auth import KeySet, TokenVerifier
from sidecar.backends import BackendBridge
from sidecar.channel_hub import ChannelHub
from sidecar.channel_io import PresenceWriter, history_reader, publisher
from sidecar.channel_service import ChannelService
from sidecar.collector import PassPacer, tune_collector
from sidecar.core.channel_rules import ChannelLimits
from sidecar.core.close_codes import CloseCode
from sidecar.drain import Drainer
from sidecar.gateway import Gateway
from sidecar.hash_sources import HashSourcesFollower
from sidecar.jwks import JwksRefresher, load_keys
from sidecar.metrics import GatewayMetrics
from sidecar.public_port import PublicPort
from sidecar.redis_replay_store import RedisReplayStore
from sidecar.replay_store import ReplayStore, ReplayWriter
from sidecar.session_registry import SessionRegistry
from wsfleet import tracing
from wsfleet.admin_token import read_admin_token
from wsfleet.arg_types import routing_key_source
from wsfleet.channels.config_follower import NamespacesFollower
from wsfleet.channels.redis_store import RedisChannelStore
from wsfleet.errors import ConfigError
from wsfleet.pod_registration import PodRegistration, pod_record
from wsfleet.process_shell import listen, open_registry, start_tasks
from wsfleet.readiness import write_ready
from wsfleet.registry import HashSources
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import PodSigner, read_pod_key
from wsfleet.settings import SidecarSettings
from wsfleet.stop_signals import signal_events
from wsfleet.tokens import read_auth_key

log = structlog.get_logger()

# A SIGTERM drain may overrun its budget by this much (closing frames still on their way)
# before the shutdown closes whatever is left with 1001.
DRAIN_OVERRUN_S = 5.0
BACKEND_WAIT_S = 5.0  # at start, how long to wait for a backend link before serving anyway
LEAVE_REGISTRY_S = 2.0  # at stop, how long removing this pod's record may take
ADMIN_BACKLOG = 128  # the admin port's accept backlog (operators, probes, the control plane)


async def build_verifier(settings: SidecarSettings) -> TokenVerifier:
    """Keys from the shared secret file and/or the JWKS; at least one is needed."""
    try:  # a typo here would refuse every client: say so at start instead
        routing_key_source(settings.routing_key_source)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--routing-key: {exc}") from None
    if settings.auth_key_file is None and settings.jwks is None:
        raise ConfigError("a sidecar needs --auth-key-file or --jwks (or both)")
    if settings.jwks is not None and settings.issuer is None:
        raise ConfigError(
            "--jwks needs --issuer: keys published for others would otherwise be trusted "
            "for tokens any issuer using them signed"
        )
    secret = read_auth_key(settings.auth_key_file) if settings.auth_key_file else None
    keys = KeySet(secret=secret)
    if settings.jwks is not None:
        try:
            keys = await load_keys(settings.jwks, secret)
        except (OSError, ValueError, aiohttp.ClientError) as exc:
            raise ConfigError(f"cannot load JWKS {settings.jwks}: {exc}") from None
    return TokenVerifier(
        keys, settings.audience, settings.issuer, max_lifetime_s=settings.max_token_lifetime_s
    )


@dataclasses.dataclass(frozen=True)
class Stores:
    """The Redis stores a sidecar opens, each answering."""

    registry: RedisRegistry
    replay: ReplayStore
    channels: RedisChannelStore


@dataclasses.dataclass(frozen=True)
class Channels:
    """The channel side of the sidecar: the hub (one subscriber for the pod), the service
    clients publish through, and the namespaces they follow."""

    hub: ChannelHub
    service: ChannelService
    namespaces: NamespacesFollower


async def serve(
    settings: SidecarSettings, stop: asyncio.Event, hurry: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set; raises :class:`StartupError` if it cannot start.

    Every step pushes what undoes it on one ``AsyncExitStack`` right after it opens, so a
    normal stop, a SIGTERM drain and a startup error at any step all close what was opened,
    in reverse: tasks, the registry record, the clients (1001), the ports, the backends,
    the channels, the replay writer, the stores."""
    verifier = await build_verifier(settings)
    # this pod's own key only (never the fleet's root key): it signs this pod's record and
    # yields the one admin token the control plane calls this pod with
    signer = read_pod_key(settings.registry_key_file, settings.pod_id)
    admin_tokens = _admin_tokens(settings, signer)
    async with contextlib.AsyncExitStack() as stack:
        metrics = GatewayMetrics()
        tune_collector(stack, metrics.observe_gc_pause)
        stores = await open_stores(stack, settings, signer)
        replay = start_replay_writer(stack, settings, stores, metrics)
        channels = await start_channels(stack, settings, stores, metrics)
        bridge = await start_backends(stack, settings, channels)
        gateway = build_gateway(settings, verifier, stores, metrics, channels, bridge, replay)
        registration = pod_registration(settings, stores.registry, gateway, metrics)
        drainer = Drainer(gateway, registration, settings.drain_retry_hint_ms)
        hash_sources = await follow_hash_sources(settings, stores.registry, gateway)
        port, admin_port = await listen_both(
            stack, settings, gateway, registration, drainer, admin_tokens
        )
        registration.set_address(port, admin_port)
        stack.push_async_callback(close_clients, gateway, settings.shutdown_timeout_s)
        stack.push_async_callback(leave_registry, registration)
        tasks = [registration.run(), hash_sources.run(), channels.namespaces.run()]
        tasks += _gateway_loops(settings, verifier, gateway, drainer, hurry)
        start_tasks(stack, tasks)
        stack.callback(_stopping, gateway)
        write_ready(settings.ready_file, port=port, admin_port=admin_port, pod_id=settings.pod_id)
        log.info("sidecar_started", pod_id=settings.pod_id, port=port, admin_port=admin_port)
        await drain_on_stop(stop, drainer, settings.drain_budget_s)
    log.info("sidecar_stopped")


async def open_stores(
    stack: contextlib.AsyncExitStack, settings: SidecarSettings, signer: PodSigner | None
) -> Stores:
    """The registry (answering, else :class:`StartupError`), the replay store and the
    channel store, each closed when ``stack`` closes."""
    registry = await open_registry(stack, settings.redis_url, settings.namespace, signer)
    replay = RedisReplayStore(
        settings.redis_url,
        settings.namespace,
        settings.replay_max_messages,
        settings.replay_max_age_s,
        settings.replay_max_bytes,
    )
    stack.push_async_callback(replay.close)
    channels = RedisChannelStore(settings.redis_url, settings.namespace)
    stack.push_async_callback(channels.close)
    return Stores(registry, replay, channels)


def start_replay_writer(
    stack: contextlib.AsyncExitStack,
    settings: SidecarSettings,
    stores: Stores,
    metrics: GatewayMetrics,
) -> ReplayWriter:
    """The batched writer of replay messages; flushed and stopped when ``stack`` closes."""
    replay = ReplayWriter(
        stores.replay, metrics.registry_errors.inc, settings.redis_batch_spacing_s
    )
    replay.start()
    stack.push_async_callback(replay.stop)
    return replay


async def start_channels(
    stack: contextlib.AsyncExitStack,
    settings: SidecarSettings,
    stores: Stores,
    metrics: GatewayMetrics,
) -> Channels:
    """Learn the channel namespaces and start the pod's channel hub (stopped, its presence
    flushed, when ``stack`` closes)."""
    store, spacing, on_error = (
        stores.channels,
        settings.redis_batch_spacing_s,
        metrics.registry_errors.inc,
    )
    namespaces = NamespacesFollower(stores.registry, settings.registry_refresh_s)
    hub = ChannelHub(
        store.client,
        store.topic,
        store.command_topic(settings.pod_id),
        history_reader(store, spacing, on_error),
        PresenceWriter(store, settings.presence_ttl_s, spacing, on_error),
        lambda: namespaces.current,
        settings.channel_check_s,
        settings.pod_id,
    )
    service = ChannelService(
        hub,
        store,
        publisher(store, spacing, on_error),
        ChannelLimits(settings.max_subscriptions, settings.max_pending_publications),
    )
    await namespaces.refresh()
    hub.start()
    stack.push_async_callback(hub.stop)
    return Channels(hub, service, namespaces)


async def start_backends(
    stack: contextlib.AsyncExitStack, settings: SidecarSettings, channels: Channels
) -> BackendBridge:
    """Open the links to the backends (closed when ``stack`` closes) and wait, at most
    :data:`BACKEND_WAIT_S`, for one to be up."""
    bridge = BackendBridge(
        settings.backends,
        settings.pod_id,
        settings.backend_loss,
        on_publish=channels.service.publish_for_backend,
        spacing_s=settings.bridge_batch_spacing_s,
    )
    bridge.start()
    stack.push_async_callback(bridge.stop)
    await bridge.wait_any_up(BACKEND_WAIT_S)
    return bridge


def build_gateway(
    settings: SidecarSettings,
    verifier: TokenVerifier,
    stores: Stores,
    metrics: GatewayMetrics,
    channels: Channels,
    bridge: BackendBridge,
    replay: ReplayWriter,
) -> Gateway:
    """The gateway (opens nothing), its gauges watched."""
    sessions = SessionRegistry(
        stores.registry,
        settings.connection_ttl_s,
        settings.connection_flush_s,
        settings.max_connections_per_user,
        on_error=metrics.registry_errors.inc,
        spacing_s=settings.redis_batch_spacing_s,
    )
    gateway = Gateway(
        settings, verifier, bridge, metrics, sessions, stores.replay, replay, channels.service
    )
    hub, service = channels.hub, channels.service
    metrics.watch_gateway(gateway.table.queued, gateway.table.counts_by_transport)
    metrics.watch_channels(
        lambda: (
            len(hub.channels),
            hub.subscriptions(),
            hub.counters.publications,
            hub.counters.deliveries,
            hub.counters.gaps_filled,
            hub.counters.resets,
            dict(service.refused),
        )
    )
    return gateway


def pod_registration(
    settings: SidecarSettings,
    registry: RedisRegistry,
    gateway: Gateway,
    metrics: GatewayMetrics,
) -> PodRegistration:
    """This pod's record in the registry (written once its ports are known)."""
    record = pod_record(settings, time.time())
    return PodRegistration(
        registry,
        record,
        settings.registry_ttl_s,
        settings.registry_refresh_s,
        connection_counts=gateway.table.counts_by_transport,
        on_error=metrics.registry_errors.inc,
        on_record_lost=gateway.sessions.mark_resync,
    )


async def follow_hash_sources(
    settings: SidecarSettings, registry: RedisRegistry, gateway: Gateway
) -> HashSourcesFollower:
    """Learn where Envoy hashes this pool's users (the gatekeeper checks the same)."""

    def use_hash_sources(sources: HashSources) -> None:
        gateway.gatekeeper.hash_sources = sources

    follower = HashSourcesFollower(
        registry, settings.pool, use_hash_sources, settings.registry_refresh_s
    )
    await follower.refresh()
    return follower


def _admin_tokens(settings: SidecarSettings, signer: PodSigner | None) -> tuple[str, ...]:
    """The operators' admin token and this pod's own (the control plane calls with it)."""
    tokens = (
        read_admin_token(settings.admin_token_file),
        signer.admin_token(settings.pod_id) if signer else None,
    )
    return tuple(token for token in tokens if token is not None)


async def listen_both(
    stack: contextlib.AsyncExitStack,
    settings: SidecarSettings,
    gateway: Gateway,
    registration: PodRegistration,
    drainer: Drainer,
    admin_tokens: tuple[str, ...],
) -> tuple[int, int]:
    """Listen on the public and the admin port (both closed when ``stack`` closes); the
    bound ports."""
    port = await listen(
        stack,
        build_public_app(gateway, registration),
        settings.host,
        settings.port,
        settings.listen_backlog,
        settings.http_idle_timeout_s,
        front=functools.partial(PublicPort, gateway, settings.http_idle_timeout_s),
    )
    admin_port = await listen(
        stack,
        build_admin_app(gateway, registration, drainer, admin_tokens),
        settings.host,
        settings.admin_port,
        ADMIN_BACKLOG,
        settings.http_idle_timeout_s,
    )
    return port, admin_port


def _gateway_loops(
    settings: SidecarSettings,
    verifier: TokenVerifier,
    gateway: Gateway,
    drainer: Drainer,
    hurry: asyncio.Event | None,
) -> list[Coroutine[Any, Any, None]]:
    """The gateway's own loops: session flushes, heartbeats, keepalives, the collector's
    paced passes, the JWKS refresh, and the second signal that hurries a drain."""
    loops = [
        gateway.sessions.run(),
        PassPacer().run(),
        gateway.table.run_heartbeats(),
        gateway.table.run_keepalives(),
    ]
    if settings.jwks is not None:
        loops.append(JwksRefresher(verifier, settings.jwks, settings.jwks_refresh_s).run())
    if hurry is not None:
        loops.append(_hurry_on(hurry, drainer))
    return loops


async def close_clients(gateway: Gateway, timeout_s: float) -> None:
    """Close every client left with 1001 going away."""
    await gateway.table.close_all(CloseCode.GOING_AWAY, "gateway shutting down", timeout_s)


async def leave_registry(registration: PodRegistration) -> None:
    """Remove this pod's record (Envoy sends it no new clients), in at most
    :data:`LEAVE_REGISTRY_S`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(registration.remove(), LEAVE_REGISTRY_S)


def _stopping(gateway: Gateway) -> None:
    log.info("sidecar_stopping", connections=len(gateway.table.connections))
    gateway.gatekeeper.draining = True


async def drain_on_stop(stop: asyncio.Event, drainer: Drainer, budget_s: float) -> None:
    """Wait for ``stop``, then drain (no new sessions, paced 1012 closes) over the budget,
    unless a drain already ran."""
    await stop.wait()
    drainer.start(budget_s)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(drainer.done.wait(), budget_s + DRAIN_OVERRUN_S)


async def _hurry_on(hurry: asyncio.Event, drainer: Drainer) -> None:
    await hurry.wait()
    log.info("drain_hurried")
    drainer.hurry()


async def run(settings: SidecarSettings) -> None:
    """Serve until SIGTERM/SIGINT, which starts a drain; a second signal hurries it."""
    stop, hurry = signal_events()
    tracing.configure("wsfleet-sidecar", settings.pod_id)  # when OTEL_EXPORTER_OTLP_ENDPOINT is set
    await serve(settings, stop, hurry)
