"""Sidecar lifecycle, written once: start, serve, stop (every timeout a setting).

Start: verify settings, open backend links, listen (public + admin), register.
Stop (SIGTERM/SIGINT): leave the registry (Envoy stops sending new clients),
close every client with 1001 going away, stop listening, close links.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import time

import aiohttp
import structlog
from aiohttp import web

from sidecar.app import build_admin_app, build_public_app
from sidecar.auth import KeySet, TokenVerifier
from sidecar.backends import BackendBridge
from sidecar.channel_hub import ChannelHub
from sidecar.channel_io import PresenceWriter, history_reader, publisher
from sidecar.channel_service import ChannelService
from sidecar.core.channel_rules import ChannelLimits
from sidecar.core.close_codes import CloseCode
from sidecar.drain import Drainer
from sidecar.gateway import Gateway
from sidecar.hash_sources import HashSourcesFollower
from sidecar.jwks import JwksRefresher, load_keys
from sidecar.metrics import GatewayMetrics
from sidecar.replay_store import ReplayStore, ReplayWriter
from sidecar.session_registry import SessionRegistry
from wsfleet import tracing
from wsfleet.admin_auth import read_admin_token
from wsfleet.arg_types import routing_key_source
from wsfleet.channels.config_follower import NamespacesFollower
from wsfleet.channels.redis_store import RedisChannelStore
from wsfleet.errors import ConfigError, StartupError
from wsfleet.pod_registration import PodRegistration
from wsfleet.process_shell import signal_events, stop_tasks
from wsfleet.readiness import write_ready
from wsfleet.registry import HashSources, PodRecord, RegistryUnavailable
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import read_pod_key
from wsfleet.settings import SidecarSettings, advertised_address, redacted_url
from wsfleet.tokens import read_auth_key

log = structlog.get_logger()

# A SIGTERM drain may overrun its budget by this much (closing frames still on their way)
# before the shutdown closes whatever is left with 1001.
DRAIN_OVERRUN_S = 5.0
BACKEND_WAIT_S = 5.0  # at start, how long to wait for a backend link before serving anyway
LEAVE_REGISTRY_S = 2.0  # at stop, how long removing this pod's record may take
ADMIN_BACKLOG = 128  # the admin port's accept backlog (operators, probes, the control plane)
COLLECTOR_THRESHOLDS = (10_000, 10, 100)
"""Python's cycle collector, tuned for many long-lived connections. A full collection
walks every live object (about 50 per held connection: 0.3-0.5 s at 8,000 connections
on one core, a stall for every client of the pod); with the defaults (700, 10, 10) one
ran every few seconds under steady traffic. These make young collections rarer (a few
milliseconds each) and full ones run at most every thousand of them."""


async def _listen(
    app: web.Application, host: str, port: int, backlog: int, idle_timeout_s: float
) -> web.AppRunner:
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, keepalive_timeout=idle_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return runner


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


async def serve(
    settings: SidecarSettings, stop: asyncio.Event, hurry: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set; raises :class:`StartupError` if it cannot start."""
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    verifier = await build_verifier(settings)
    # this pod's own key only (never the fleet's root key): it signs this pod's record and
    # yields the one admin token the control plane calls this pod with
    signer = read_pod_key(settings.registry_key_file, settings.pod_id)
    registry = RedisRegistry(settings.redis_url, settings.namespace, signer=signer)
    try:
        await registry.ping()
    except RegistryUnavailable as exc:
        await registry.close()
        url = redacted_url(settings.redis_url)
        raise StartupError(f"cannot reach Redis at {url}: {exc}") from None
    metrics = GatewayMetrics()
    channel_store = RedisChannelStore(settings.redis_url, settings.namespace)
    spacing = settings.redis_batch_spacing_s
    namespaces = NamespacesFollower(registry, settings.registry_refresh_s)
    hub = ChannelHub(
        channel_store.client,
        channel_store.topic,
        channel_store.command_topic(settings.pod_id),
        history_reader(channel_store, spacing, metrics.registry_errors.inc),
        PresenceWriter(
            channel_store, settings.presence_ttl_s, spacing, metrics.registry_errors.inc
        ),
        lambda: namespaces.current,
        settings.channel_check_s,
        settings.pod_id,
    )
    channels = ChannelService(
        hub,
        channel_store,
        publisher(channel_store, spacing, metrics.registry_errors.inc),
        ChannelLimits(settings.max_subscriptions, settings.max_pending_publications),
    )
    bridge = BackendBridge(
        settings.backends,
        settings.pod_id,
        settings.backend_loss,
        on_publish=channels.publish_for_backend,
    )
    sessions = SessionRegistry(
        registry,
        settings.connection_ttl_s,
        settings.connection_flush_s,
        settings.max_connections_per_user,
        on_error=metrics.registry_errors.inc,
        spacing_s=settings.redis_batch_spacing_s,
    )
    replay_store = ReplayStore(
        settings.redis_url,
        settings.namespace,
        settings.replay_max_messages,
        settings.replay_max_age_s,
        settings.replay_max_bytes,
    )
    replay = ReplayWriter(replay_store, metrics.registry_errors.inc, settings.redis_batch_spacing_s)
    replay.start()
    gateway = Gateway(settings, verifier, bridge, metrics, sessions, replay_store, replay, channels)
    metrics.watch_gateway(gateway.table.queued, gateway.table.counts_by_transport)
    metrics.watch_channels(
        lambda: (
            len(hub.channels),
            hub.subscriptions(),
            hub.counters.publications,
            hub.counters.deliveries,
            hub.counters.gaps_filled,
            hub.counters.resets,
            dict(channels.refused),
        )
    )
    await namespaces.refresh()
    hub.start()
    bridge.start()
    await bridge.wait_any_up(BACKEND_WAIT_S)

    registration = PodRegistration(
        registry,
        PodRecord(
            pod_id=settings.pod_id,
            pool=settings.pool,
            host=advertised_address(settings.host, settings.advertise_host),
            port=0,
            admin_port=0,
            region=settings.region,
            zone=settings.zone,
            started_at=time.time(),
        ),
        settings.registry_ttl_s,
        settings.registry_refresh_s,
        connection_counts=gateway.table.counts_by_transport,
        on_error=metrics.registry_errors.inc,
        on_record_lost=sessions.mark_resync,
    )

    def use_hash_sources(sources: HashSources) -> None:
        gateway.gatekeeper.hash_sources = sources

    hash_sources = HashSourcesFollower(
        registry, settings.pool, use_hash_sources, settings.registry_refresh_s
    )
    await hash_sources.refresh()
    drainer = Drainer(gateway, registration, settings.drain_retry_hint_ms)
    admin_token = read_admin_token(settings.admin_token_file)
    admin_tokens = tuple(
        token
        for token in (admin_token, signer.admin_token(settings.pod_id) if signer else None)
        if token is not None
    )
    runners: list[web.AppRunner] = []
    try:
        public = await _listen(
            build_public_app(gateway, registration),
            settings.host,
            settings.port,
            settings.listen_backlog,
            settings.http_idle_timeout_s,
        )
        runners.append(public)
        admin = await _listen(
            build_admin_app(gateway, registration, drainer, admin_tokens),
            settings.host,
            settings.admin_port,
            ADMIN_BACKLOG,
            settings.http_idle_timeout_s,
        )
        runners.append(admin)
    except StartupError:
        for runner in runners:
            await runner.cleanup()
        await bridge.stop()
        await hub.stop()
        await channel_store.close()
        await registry.close()
        raise
    port = public.addresses[0][1]
    admin_port = admin.addresses[0][1]
    registration.set_address(port, admin_port)
    tasks = [
        asyncio.create_task(registration.run()),
        asyncio.create_task(hash_sources.run()),
        asyncio.create_task(namespaces.run()),
        asyncio.create_task(sessions.run()),
        asyncio.create_task(gateway.table.run_heartbeats()),
        asyncio.create_task(gateway.table.run_keepalives()),
    ]
    if settings.jwks is not None:
        refresher = JwksRefresher(verifier, settings.jwks, settings.jwks_refresh_s)
        tasks.append(asyncio.create_task(refresher.run()))
    if hurry is not None:
        tasks.append(asyncio.create_task(_hurry_on(hurry, drainer)))
    write_ready(settings.ready_file, port=port, admin_port=admin_port, pod_id=settings.pod_id)
    log.info("sidecar_started", pod_id=settings.pod_id, port=port, admin_port=admin_port)
    try:
        await stop.wait()
        # SIGTERM: drain first (no new sessions, paced 1012 closes), unless one already ran
        drainer.start(settings.drain_budget_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drainer.done.wait(), settings.drain_budget_s + DRAIN_OVERRUN_S)
    finally:
        log.info("sidecar_stopping", connections=len(gateway.table.connections))
        gateway.gatekeeper.draining = True
        await stop_tasks(tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(registration.remove(), LEAVE_REGISTRY_S)
        await gateway.table.close_all(
            CloseCode.GOING_AWAY, "gateway shutting down", settings.shutdown_timeout_s
        )
        for runner in reversed(runners):
            await runner.cleanup()
        await bridge.stop()
        await hub.stop()
        await channel_store.close()
        await replay.stop()
        await replay_store.close()
        await registry.close()
        log.info("sidecar_stopped")


async def _hurry_on(hurry: asyncio.Event, drainer: Drainer) -> None:
    await hurry.wait()
    log.info("drain_hurried")
    drainer.hurry()


async def run(settings: SidecarSettings) -> None:
    """Serve until SIGTERM/SIGINT, which starts a drain; a second signal hurries it."""
    stop, hurry = signal_events()
    tracing.configure("wsfleet-sidecar", settings.pod_id)  # when OTEL_EXPORTER_OTLP_ENDPOINT is set
    await serve(settings, stop, hurry)
