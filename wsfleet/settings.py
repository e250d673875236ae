"""Typed settings for every process, with every default in one place.

Each field is declared once, with :func:`~wsfleet.settings_flags.setting`: its default,
help, group and check; the flags of ``wsfleet xds``, ``wsfleet sidecar`` and ``wsfleet
backend`` and their ``WSFLEET_…`` environment variables are made from the fields
(:mod:`wsfleet.settings_flags`). Units are in the names (``_s`` seconds, ``_bytes``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from wsfleet.arg_types import (
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    routing_key_source,
)
from wsfleet.arg_types import port as port_number
from wsfleet.batch_spacing import BATCH_SPACING_S, BRIDGE_BATCH_SPACING_S
from wsfleet.bridge_limits import client_message_size
from wsfleet.redis_urls import checked_url
from wsfleet.settings_flags import setting

DEFAULT_REDIS_NAMESPACE = "wsfleet"
DEFAULT_POOL = "gateways"
DEFAULT_AUDIENCE = "wsfleet"
DEFAULT_ISSUER = "wsfleet-local"
DEFAULT_STATE_DIR = Path(os.environ.get("WSFLEET_STATE_DIR", ".wsfleet"))


UNREADABLE_URL = "<a URL that cannot be read>"
_PASSWORD_QUERY = re.compile(r"(?i)(password=)[^&#]*")


def redacted_url(url: str) -> str:
    """``url`` fit for logs and errors, with its password replaced by ``***``: of one
    server (``redis://:secret@host``) or a cluster (``redis+cluster://user:secret@h1:p1,
    h2:p2``, every node kept), and a ``password=`` query value. Never raises (it is called
    while reporting another error): text where the password's end is unclear is shown as
    :data:`UNREADABLE_URL`, as it may hold the password."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" in scheme:
        return UNREADABLE_URL if "@" in url else _without_query_password(url)
    userinfo, at, location = rest.rpartition("@")  # a password may hold "@": the last ends it
    if not at:
        return _without_query_password(url)
    user, colon, _ = userinfo.partition(":")
    if any(mark in user for mark in "/?#"):
        return UNREADABLE_URL  # an "@" in a path or query: no userinfo we can tell apart
    credentials = f"{user}:***" if colon else user
    return f"{scheme}://{credentials}@{_without_query_password(location)}"


def _without_query_password(text: str) -> str:
    return _PASSWORD_QUERY.sub(r"\1***", text)


def redis_url(text: str) -> str:
    """A Redis or Redis Cluster URL, checked at start (see :mod:`wsfleet.redis_client`)."""
    try:
        return checked_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{redacted_url(text)}: {exc}") from None


def default_pod_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def advertised_address(host: str, advertise_host: str | None) -> str:
    """The IP address other hosts reach us at (Envoy's EDS wants an IP, not a name)."""
    if advertise_host:
        return socket.gethostbyname(advertise_host)
    if host in ("0.0.0.0", "", "::"):
        return socket.gethostbyname(socket.gethostname())
    return host


@dataclass(frozen=True)
class XdsSettings:
    """The control plane (``wsfleet xds``)."""

    redis_url: str = setting(help="the registry's Redis", group="process", check=redis_url)
    policy_path: Path | None = setting(
        None,
        flag="--policy",
        help="routing policy file (default: the embedded one)",
        group="policy",
        check=Path,
    )
    listener_port: int | None = setting(
        None,
        help="move the policy's first listener to this port",
        group="policy",
        check=port_number,
    )
    policy_poll_s: float = setting(
        0.5,
        help="seconds between checks of the policy file",
        group="policy",
        check=positive_float,
    )
    grpc_host: str = setting("127.0.0.1", help="xDS (gRPC) address", group="process")
    grpc_port: int = setting(18000, help="xDS (gRPC) port", group="process", check=port_number)
    admin_host: str = setting("127.0.0.1", help="admin API address", group="process")
    admin_port: int = setting(18001, help="admin API port", group="process", check=port_number)
    namespace: str = setting(
        DEFAULT_REDIS_NAMESPACE, help="the fleet's key prefix in Redis", group="process"
    )
    membership_poll_s: float = setting(
        1.0,
        help="seconds between reads of the pods' records",
        group="process",
        check=positive_float,
    )
    admin_token_file: Path | None = setting(
        None,
        help="bearer token for the admin API (/debug/*, fleet operations)",
        group="security",
        check=Path,
    )
    registry_key_file: Path | None = setting(
        None,
        help="the fleet's root registry key (the state dir's registry.key): a pod's record "
        "must be signed with that pod's own key, derived from it; without it pods are "
        "trusted as found and never called",
        group="security",
        check=Path,
    )
    insecure_plaintext_secrets: bool = setting(
        False,
        help="without --tls-dir, serve SDS secrets (TLS private keys) over plaintext anyway "
        "(only on a network that nothing but the Envoys can reach)",
        group="security",
    )
    tls_dir: Path | None = setting(
        None,
        help="serve xDS over mutual TLS with the fleet CA in this directory (the state dir's "
        "tls/, made by wsfleet keygen): only Envoys with a client certificate of the CA, and "
        "only as the node and region it names",
        group="security",
        check=Path,
    )
    ready_file: Path | None = setting(
        None, help="write the bound ports here once serving", group="process", check=Path
    )


@dataclass(frozen=True)
class SidecarSettings:
    """One gateway sidecar (``wsfleet sidecar``)."""

    # -- process
    redis_url: str = setting(
        help="the registry's and replay buffers' Redis (redis+cluster://h:p,h:p for a cluster)",
        group="process",
        check=redis_url,
    )
    backends: tuple[str, ...] = setting(
        flag="--backend",
        help="host:port (gRPC bridge) or ws://host:port/path (WebSocket); repeat for several",
        group="process",
    )
    pod_id: str = setting(
        factory=default_pod_id,
        help="this pod's id (default: host name and pid)",
        group="process",
    )
    pool: str = setting(DEFAULT_POOL, help="the gateway pool it serves", group="process")
    host: str = setting("127.0.0.1", help="address to listen on", group="process")
    advertise_host: str | None = setting(
        None,
        help="the address Envoy dials (default: --host, or this host's IP)",
        group="process",
    )
    port: int = setting(0, help="client port (0: any free one)", group="process", check=port_number)
    admin_port: int = setting(
        0, help="admin port (0: any free one)", group="process", check=port_number
    )
    region: str = setting("local", help="the region it registers in", group="process")
    zone: str = setting("local-a", help="the zone it registers in", group="process")
    namespace: str = setting(
        DEFAULT_REDIS_NAMESPACE, help="the fleet's key prefix in Redis", group="process"
    )
    # the default 128 loses handshakes in surges (docs/envoy-behaviours.md, 9)
    listen_backlog: int = setting(
        4096, help="the client socket's accept backlog", group="process", check=positive_int
    )
    shutdown_timeout_s: float = setting(
        5.0,
        help="seconds the last closes may take at exit",
        group="process",
        check=positive_float,
    )
    ready_file: Path | None = setting(
        None, help="write the bound ports here once serving", group="process", check=Path
    )
    # -- auth
    auth_key_file: Path | None = setting(
        None, help="HS256 shared secret (the local fleet's auth.key)", group="auth", check=Path
    )
    jwks: str | None = setting(
        None, help="JWKS file or URL with RS256/ES256 keys (re-read on rotation)", group="auth"
    )
    jwks_refresh_s: float = setting(
        60.0, help="seconds between JWKS reads", group="auth", check=positive_float
    )
    issuer: str | None = setting(
        None, help="required token issuer (iss); needed with --jwks", group="auth"
    )
    max_token_lifetime_s: float = setting(
        86400.0,
        help="refuse tokens that expire later than this many seconds from now",
        group="auth",
        check=positive_float,
    )
    audience: str = setting(DEFAULT_AUDIENCE, help="required token audience (aud)", group="auth")
    # -- sessions
    routing_key_source: str = setting(
        "user",
        flag="--routing-key",
        help="where a session's backend routing key comes from: user | claim:NAME | "
        "query:NAME | header:NAME",
        group="sessions",
        check=routing_key_source,
    )
    backend_loss: str = setting(
        "move",
        help="when a backend goes: move its sessions to another, or close them (1013)",
        group="sessions",
        choices=("move", "close"),
    )
    bridge_batch_spacing_s: float = setting(
        BRIDGE_BATCH_SPACING_S,
        help="seconds the backend bridge's writer leaves between batches while busy (a gRPC "
        "write costs far more than the messages in it; lower it for latency)",
        group="sessions",
        check=non_negative_float,
    )
    subprotocols: tuple[str, ...] = setting(
        (),
        flag="--subprotocol",
        help="an application subprotocol to accept (repeat, in preference order)",
        group="sessions",
    )
    compression: bool = setting(
        True, help="permessage-deflate when the client offers it", group="sessions"
    )
    max_message_bytes: int = setting(
        64 * 1024,
        help="larger messages close the connection with 1009 (at most 32 MiB)",
        group="sessions",
        check=client_message_size,
    )
    poll_wait_s: float = setting(
        25.0,
        help="seconds a long poll waits for messages",
        group="sessions",
        check=positive_float,
    )
    poll_timeout_s: float = setting(
        60.0,
        help="a poll session with no request for this many seconds is gone",
        group="sessions",
        check=positive_float,
    )
    poll_buffer_bytes: int = setting(
        1 << 20,
        help="bytes a long-poll session holds for its client until they are acknowledged; "
        "full, it pushes back, and a client that leaves it full for the slow-consumer grace "
        "is cut (1013)",
        group="sessions",
        check=positive_int,
    )
    post_max_bytes: int = setting(
        256 * 1024,
        help="larger POST bodies to /sse/send and /poll/send are refused (413); never below "
        "one message of --max-message-bytes",
        group="sessions",
        check=positive_int,
    )
    post_max_frames: int = setting(
        100,
        help="frames one POST to /sse/send or /poll/send may carry (413 beyond)",
        group="sessions",
        check=positive_int,
    )
    # -- channels
    max_subscriptions: int = setting(
        128,
        help="channels one connection may hold",
        group="channels",
        check=positive_int,
    )
    max_pending_publications: int = setting(
        64,
        help="client publications one session may have awaiting an answer",
        group="channels",
        check=positive_int,
    )
    presence_ttl_s: float = setting(
        30.0,
        help="presence entries not refreshed for this long are gone (a crashed gateway's); "
        "refreshed every third of it",
        group="channels",
        check=positive_float,
    )
    channel_check_s: float = setting(
        10.0,
        help="seconds between checks of every local channel against its history (what the "
        "pub/sub connection lost with nothing after it)",
        group="channels",
        check=positive_float,
    )
    # -- heartbeat
    heartbeat_interval_s: float = setting(
        15.0, help="seconds between pings", group="heartbeat", check=positive_float
    )
    heartbeat_timeout_s: float = setting(
        15.0,
        help="seconds without an answer before a socket is dead (interval + timeout "
        "<= 30 s: dead sockets found in time)",
        group="heartbeat",
        check=positive_float,
    )
    heartbeat_jitter: float = setting(
        0.2,
        help="pings come up to this fraction of the interval early",
        group="heartbeat",
        check=fraction,
    )
    # -- queues
    send_queue_messages: int = setting(
        1000, help="messages a session's send queue holds", group="queues", check=positive_int
    )
    send_queue_bytes: int = setting(
        1 << 20, help="bytes a session's send queue holds", group="queues", check=positive_int
    )
    slow_consumer_grace_s: float = setting(
        5.0,
        help="seconds a full queue may stay full before the client is cut (1013)",
        group="queues",
        check=positive_float,
    )
    # -- limits
    # A connection with no complete request for this long is closed: from its first byte
    # (a header-read deadline: a slowloris client is cut) and between requests (aiohttp's
    # own default is an hour). Above Envoy's idle timeout for its pooled connections to
    # gateways (xds_server.builders.UPSTREAM_IDLE_TIMEOUT_S), so Envoy closes first.
    http_idle_timeout_s: float = setting(
        75.0,
        help="close a connection with no complete request for this long (header-read "
        "deadline and keep-alive idle)",
        group="limits",
        check=positive_float,
    )
    # Per connection, every frame counted (0: unlimited). Far above what a person or an
    # app sends; a client flooding past them is cut (1008) before it costs others.
    messages_per_s: float = setting(
        1000.0,
        flag="--messages-per-second",
        help="frames per second per connection, every frame counted (0: unlimited)",
        group="limits",
        check=non_negative_float,
    )
    message_burst: float = setting(
        0.0,
        help="frames above the rate at once (0: one second's worth)",
        group="limits",
        check=non_negative_float,
    )
    bytes_per_s: float = setting(
        4.0 * 2**20,
        flag="--bytes-per-second",
        help="bytes per second per connection (0: unlimited)",
        group="limits",
        check=non_negative_float,
    )
    byte_burst: float = setting(
        0.0,
        help="bytes above the rate at once (0: one second's worth)",
        group="limits",
        check=non_negative_float,
    )
    rate_limit_action: str = setting(
        "close",
        help="past a limit: close (1008) or drop the frame with a notice",
        group="limits",
        choices=("close", "drop"),
    )
    # fleet-wide, through the registry: many tabs and devices, not a botnet
    max_connections_per_user: int = setting(
        100,
        help="connections one user may hold, fleet-wide (0: unlimited)",
        group="limits",
        check=non_negative_int,
    )
    # -- replay
    replay_max_messages: int = setting(
        1000,
        help="messages a session's replay window keeps, at most",
        group="replay",
        check=positive_int,
    )
    replay_max_bytes: int = setting(
        1 << 20,
        help="message data a session's replay window keeps, at most",
        group="replay",
        check=positive_int,
    )
    replay_max_age_s: float = setting(
        300.0,
        help="seconds a session's buffer lives after its last write",
        group="replay",
        check=positive_float,
    )
    # -- registry
    registry_ttl_s: float = setting(
        5.0,
        help="seconds this pod's record lives unless refreshed",
        group="registry",
        check=positive_float,
    )
    registry_refresh_s: float = setting(
        1.5,
        help="seconds between refreshes of this pod's record",
        group="registry",
        check=positive_float,
    )
    connection_ttl_s: float = setting(
        60.0,
        help="seconds a connection's record lives unless refreshed (about 2x the "
        "dead-socket window)",
        group="registry",
        check=positive_float,
    )
    connection_flush_s: float = setting(
        2.0,
        help="seconds between batched writes of pongs (last_ping)",
        group="registry",
        check=positive_float,
    )
    redis_batch_spacing_s: float = setting(
        BATCH_SPACING_S,
        help="seconds the Redis writers (registry, replay) leave between batches while "
        "busy: raise it for many pods on a Redis Cluster (wsfleet capacity says how far)",
        group="registry",
        check=non_negative_float,
    )
    # -- drain
    # SIGTERM drains over this (POST /drain may say otherwise). Below Kubernetes' default
    # grace period (30 s) with room for the shutdown after it: see docs/operations.md
    drain_budget_s: float = setting(
        15.0,
        help="seconds a SIGTERM drain takes; keep it 10 s below the orchestrator's grace period",
        group="drain",
        check=non_negative_float,
    )
    drain_retry_hint_ms: int = setting(
        250,
        help="the retry hint in the 1012 close reason (randomized +-50%)",
        group="drain",
        check=positive_int,
    )
    # -- security
    admin_token_file: Path | None = setting(
        None,
        help="bearer token for the admin API (POST /drain, POST /disconnect)",
        group="security",
        check=Path,
    )
    registry_key_file: Path | None = setting(
        None,
        help="this pod's own key (wsfleet keygen --pod-key): signs its record and yields "
        "its admin token; never the fleet's registry key",
        group="security",
        check=Path,
    )


@dataclass(frozen=True)
class BackendSettings:
    """The demo echo backend (``wsfleet backend``)."""

    host: str = setting("127.0.0.1", help="address to listen on", group="process")
    port: int = setting(0, help="port (0: any free one)", group="process", check=port_number)
    ready_file: Path | None = setting(
        None, help="write the bound port here once serving", group="process", check=Path
    )
    name: str = setting("backend", help="what /whoami answers", group="process")
    broadcasters: tuple[str, ...] = setting(
        (),
        flag="--broadcaster",
        help="a user id allowed to /broadcast to every session (repeat; * for any user; "
        "default: nobody)",
        group="process",
    )


@dataclass(frozen=True)
class ApiSettings:
    """One server API instance (``wsfleet api``): any instance takes any call."""

    redis_url: str = setting(
        help="the fleet's Redis (redis+cluster://h:p,h:p for a cluster)",
        group="process",
        check=redis_url,
    )
    api_keys_file: Path = setting(
        flag="--api-keys",
        help="the API keys file (hashes and scopes; wsfleet apikey create writes it); "
        "re-read when it changes",
        group="security",
        check=Path,
    )
    pod_id: str = setting(
        factory=lambda: f"api-{default_pod_id()}",
        help="this instance's id in the registry (default: api- host name and pid)",
        group="process",
    )
    pool: str = setting(
        "api", help="the pool Envoy routes /api/ to (the policy's)", group="process"
    )
    host: str = setting("127.0.0.1", help="address to listen on", group="process")
    advertise_host: str | None = setting(
        None, help="the address Envoy dials (default: --host, or this host's IP)", group="process"
    )
    port: int = setting(0, help="API port (0: any free one)", group="process", check=port_number)
    admin_port: int = setting(
        0,
        help="admin port: metrics, health, drain (0: any free one)",
        group="process",
        check=port_number,
    )
    region: str = setting("local", help="the region it registers in", group="process")
    zone: str = setting("local-a", help="the zone it registers in", group="process")
    namespace: str = setting(
        DEFAULT_REDIS_NAMESPACE, help="the fleet's key prefix in Redis", group="process"
    )
    max_body_bytes: int = setting(
        1 << 20, help="larger request bodies are refused (413)", group="limits", check=positive_int
    )
    registry_ttl_s: float = setting(
        5.0,
        help="its registry entry lives this long unless refreshed",
        group="process",
        check=positive_float,
    )
    registry_refresh_s: float = setting(
        1.5,
        help="seconds between refreshes (and reads of the namespaces)",
        group="process",
        check=positive_float,
    )
    redis_batch_spacing_s: float = setting(
        BATCH_SPACING_S,
        help="batched Redis calls (publications of concurrent requests) leave this far apart",
        group="process",
        check=non_negative_float,
    )
    admin_token_file: Path | None = setting(
        None, help="operators' admin token (drain)", group="security", check=Path
    )
    registry_key_file: Path | None = setting(
        None,
        help="this instance's own key (wsfleet keygen --pod-key): signs its record; never "
        "the fleet's registry key",
        group="security",
        check=Path,
    )
    drain_grace_s: float = setting(
        1.0,
        help="at stop, seconds between leaving Envoy's pool and closing (calls under way end)",
        group="process",
        check=non_negative_float,
    )
    ready_file: Path | None = setting(
        None, help="write the bound ports here once serving", group="process", check=Path
    )
