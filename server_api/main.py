"""A server API instance, start to stop, declared once: everything it opens is on one
``AsyncExitStack`` and closed in reverse on every path, startup errors included.

Start: read the API keys, open the registry and the channel store, follow the channel
namespaces, listen (API and admin), register in the ``api`` pool (Envoy routes ``/api/``
to every instance registered there). Stop (SIGTERM/SIGINT): leave Envoy's pool (DRAINING),
let calls under way end for ``drain_grace_s``, leave the registry, close.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server_api.app import ServerApi
from server_api.keys import ApiKeys
from server_api.metrics import ApiMetrics
from wsfleet.admin_auth import require_token
from wsfleet.admin_token import read_admin_token
from wsfleet.channels.batched import BatchedCalls
from wsfleet.channels.config_follower import NamespacesFollower
from wsfleet.channels.redis_store import RedisChannelStore
from wsfleet.errors import ConfigError, StartupError
from wsfleet.pod_registration import PodRegistration, pod_record
from wsfleet.process_shell import listen, open_registry, start_tasks
from wsfleet.readiness import write_ready
from wsfleet.registry import PodState
from wsfleet.registry.signing import PodSigner, read_pod_key
from wsfleet.settings import ApiSettings
from wsfleet.stop_signals import signal_events

log = structlog.get_logger()

KEYS_CHECK_S = 2.0  # how often the keys file is looked at for changes


async def serve(settings: ApiSettings, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set; raises :class:`StartupError` if it cannot start."""
    try:
        keys = ApiKeys(settings.api_keys_file)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    async with contextlib.AsyncExitStack() as stack:
        signer = read_pod_key(settings.registry_key_file, settings.pod_id)
        registry = await open_registry(stack, settings.redis_url, settings.namespace, signer)
        store = RedisChannelStore(settings.redis_url, settings.namespace)
        stack.push_async_callback(store.close)
        metrics = ApiMetrics()
        namespaces = NamespacesFollower(registry, settings.registry_refresh_s)
        await namespaces.refresh()
        publisher = BatchedCalls(
            store.publish, settings.redis_batch_spacing_s, metrics.store_errors.inc
        )
        stack.push_async_callback(publisher.stop)
        api = ServerApi(keys, store, publisher, lambda: namespaces.current, metrics)
        registration = PodRegistration(
            registry,
            pod_record(settings, time.time()),
            settings.registry_ttl_s,
            settings.registry_refresh_s,
            connection_counts=dict,
            on_error=metrics.store_errors.inc,
        )
        public = web.Application(client_max_size=settings.max_body_bytes)
        api.routes(public)
        _health(public, registration, namespaces)
        port = await listen(stack, public, settings.host, settings.port, backlog=1024)
        admin = web.Application()
        _health(admin, registration, namespaces)
        _admin_routes(admin, metrics, registration, settings, signer)
        admin_port = await listen(stack, admin, settings.host, settings.admin_port)
        registration.set_address(port, admin_port)
        stack.push_async_callback(registration.remove)
        start_tasks(stack, [registration.run(), namespaces.run(), _follow_keys(keys)])
        write_ready(settings.ready_file, port=port, admin_port=admin_port, pod_id=settings.pod_id)
        log.info(
            "api_started", pod_id=settings.pod_id, port=port, admin_port=admin_port, keys=len(keys)
        )
        await stop.wait()
        log.info("api_stopping")
        await registration.set_state(PodState.DRAINING)  # Envoy sends no new calls here
        await asyncio.sleep(settings.drain_grace_s)  # calls under way finish
    log.info("api_stopped")


def _health(
    app: web.Application, registration: PodRegistration, namespaces: NamespacesFollower
) -> None:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "pod_id": registration.pod.pod_id})

    async def readyz(_: web.Request) -> web.Response:
        if registration.pod.state is not PodState.SERVING:
            ready, why = False, "draining"
        elif not registration.registered:
            ready, why = False, "not registered"
        elif namespaces.current is None:
            ready, why = False, "the channel namespaces are not known yet (no control plane?)"
        else:
            ready, why = True, "ready"
        body = {"ready": ready, "reason": why, "pod_id": registration.pod.pod_id}
        return web.json_response(body, status=200 if ready else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def _admin_routes(
    app: web.Application,
    metrics: ApiMetrics,
    registration: PodRegistration,
    settings: ApiSettings,
    signer: PodSigner | None,
) -> None:
    tokens = tuple(
        token
        for token in (
            read_admin_token(settings.admin_token_file),
            signer.admin_token(settings.pod_id) if signer else None,
        )
        if token is not None
    )

    async def scrape(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def drain(_: web.Request) -> web.Response:
        await registration.set_state(PodState.DRAINING)
        return web.json_response({"pod_id": settings.pod_id, "state": "draining"}, status=202)

    async def undrain(_: web.Request) -> web.Response:
        await registration.set_state(PodState.SERVING)
        return web.json_response({"pod_id": settings.pod_id, "state": "serving"})

    app.router.add_get("/metrics", scrape)
    app.router.add_post("/drain", require_token(tokens, drain))
    app.router.add_post("/drain/cancel", require_token(tokens, undrain))


async def _follow_keys(keys: ApiKeys) -> None:
    while True:
        await asyncio.sleep(KEYS_CHECK_S)
        try:
            if keys.reload():
                log.info("api_keys_reloaded", keys=len(keys))
        except ConfigError as exc:
            log.warning("api_keys_refused", error=str(exc))


async def run(settings: ApiSettings) -> None:
    stop, _ = signal_events()
    await serve(settings, stop)
