"""Typed settings for every process, with every default in one place.

The CLI (:mod:`wsfleet.cli`) fills these from flags; the launcher builds them
for its children. Units are in the names (``_s`` seconds, ``_bytes``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

DEFAULT_REDIS_NAMESPACE = "wsfleet"
DEFAULT_POOL = "gateways"
DEFAULT_AUDIENCE = "wsfleet"
DEFAULT_ISSUER = "wsfleet-local"
DEFAULT_STATE_DIR = Path(os.environ.get("WSFLEET_STATE_DIR", ".wsfleet"))


def redacted_url(url: str) -> str:
    """``url`` fit for logs and errors: a password in it (``redis://:secret@host``) is
    replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


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

    redis_url: str
    policy_path: Path | None = None  # None: the embedded default policy
    listener_port: int | None = None  # overrides the first listener's port
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 18000
    admin_host: str = "127.0.0.1"
    admin_port: int = 18001
    namespace: str = DEFAULT_REDIS_NAMESPACE
    membership_poll_s: float = 1.0
    policy_poll_s: float = 0.5
    admin_token_file: Path | None = None  # protects /debug/* and the fleet admin API
    # pods' records must be signed with it; pods are called with tokens derived from it
    registry_key_file: Path | None = None
    tls_dir: Path | None = None  # the fleet CA's files: xDS only over mTLS, to proven nodes
    ready_file: Path | None = None


@dataclass(frozen=True)
class SidecarSettings:
    """One gateway sidecar (``wsfleet sidecar``)."""

    redis_url: str
    backends: tuple[str, ...]  # host:port (gRPC bridge) or ws://host:port/path (WebSocket)
    auth_key_file: Path | None = None  # HS256 shared secret
    jwks: str | None = None  # JWKS file path or URL (RS256/ES256 keys by kid)
    jwks_refresh_s: float = 60.0
    issuer: str | None = None  # when set, tokens must carry this "iss" (required with jwks)
    max_token_lifetime_s: float = 86400.0  # a token expiring later than this is refused
    pod_id: str = field(default_factory=default_pod_id)
    pool: str = DEFAULT_POOL
    host: str = "127.0.0.1"
    advertise_host: str | None = None  # the IP Envoy dials; default: host (or this host's IP)
    port: int = 0  # 0: any free port; the registry records the real one
    admin_port: int = 0
    region: str = "local"
    zone: str = "local-a"
    namespace: str = DEFAULT_REDIS_NAMESPACE
    audience: str = DEFAULT_AUDIENCE
    user_query_parameter: str = "user"  # Envoy's hash key: must equal the token's subject
    user_header: str = "x-user-id"
    # where a session's backend_routing_key comes from: "user", "claim:NAME",
    # "query:NAME" or "header:NAME"
    routing_key_source: str = "user"
    backend_loss: str = "move"  # "move" sessions to another backend, or "close" them (1013)
    subprotocols: tuple[str, ...] = ()  # application subprotocols offered, in preference order
    compression: bool = True  # permessage-deflate when the client offers it
    # the default 128 loses handshakes in surges (docs/envoy-behaviours.md, 9)
    listen_backlog: int = 4096
    max_message_bytes: int = 64 * 1024  # larger messages close the connection with 1009
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 20.0  # interval + timeout <= 30 s: dead sockets found in time
    heartbeat_jitter: float = 0.2
    send_queue_messages: int = 1000
    send_queue_bytes: int = 1 << 20
    slow_consumer_grace_s: float = 5.0
    # A connection with no complete request for this long is closed: from its first byte
    # (a header-read deadline: a slowloris client is cut) and between requests (aiohttp's
    # own default is an hour). Above Envoy's idle timeout for its pooled connections to
    # gateways (xds_server.builders.UPSTREAM_IDLE_TIMEOUT_S), so Envoy closes first.
    http_idle_timeout_s: float = 75.0
    # Per connection, every frame counted (0: unlimited). Far above what a person or an
    # app sends; a client flooding past them is cut (1008) before it costs others.
    messages_per_s: float = 1000.0
    message_burst: float = 0.0  # 0: one second's worth of the rate
    bytes_per_s: float = 4.0 * 2**20
    byte_burst: float = 0.0
    rate_limit_action: str = "close"  # "close" (1008) or "drop" (with a notice)
    # fleet-wide, through the registry (0: unlimited): many tabs and devices, not a botnet
    max_connections_per_user: int = 100
    replay_max_messages: int = 1000  # the replay window: this many messages per session ...
    replay_max_bytes: int = 1 << 20  # ... and this much data (16 messages of the maximum size)
    replay_max_age_s: float = (
        300.0  # ... and a session's buffer lives this long after its last write
    )
    poll_wait_s: float = 25.0  # a long poll waits this long for messages
    poll_timeout_s: float = 60.0  # a poll session with no request for this long is gone
    registry_ttl_s: float = 5.0
    registry_refresh_s: float = 1.5
    connection_ttl_s: float = 60.0  # about 2x the dead-socket window
    connection_flush_s: float = 2.0  # last_ping writes are batched this often
    shutdown_timeout_s: float = 5.0
    # SIGTERM drains over this (POST /drain may say otherwise). Below Kubernetes' default
    # grace period (30 s) with room for the shutdown after it: see docs/operations.md
    drain_budget_s: float = 15.0
    drain_retry_hint_ms: int = 250  # carried in the 1012 close reason (randomized +-50%)
    admin_token_file: Path | None = None  # protects POST /drain, POST /disconnect
    registry_key_file: Path | None = None  # signs this pod's record; its admin token derives
    ready_file: Path | None = None


@dataclass(frozen=True)
class BackendSettings:
    """The demo echo backend (``wsfleet backend``)."""

    host: str = "127.0.0.1"
    port: int = 0
    ready_file: Path | None = None
    name: str = "backend"  # what /whoami answers
