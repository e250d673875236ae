"""Envoy from a static config, for the ``envoy+bare`` peer: the same listener settings as
the fleet's Envoy (32 KiB buffers, no connection limits short of the overload manager's),
one route to the bare aiohttp echo server. ``envoy-share`` starts it too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.envoy_bootstrap import envoy_binary

START_TIMEOUT_S = 30.0
HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
DOWNSTREAM_CONNECTIONS = (
    "type.googleapis.com/"
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)


def static_envoy_config(listen_port: int, upstream_port: int, admin_port: int) -> dict[str, Any]:
    hcm = {
        "@type": HCM,
        "stat_prefix": "bare",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "bare",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "bare", "timeout": "0s"}}
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    limit = {"max_connections": 1000000, "max_pending_requests": 1000000, "max_requests": 1000000}
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "bare",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listen_port}
                    },
                    "per_connection_buffer_limit_bytes": 32768,
                    "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
                }
            ],
            "clusters": [
                {
                    "name": "bare",
                    "type": "STATIC",
                    "connect_timeout": "2s",
                    "per_connection_buffer_limit_bytes": 32768,
                    "circuit_breakers": {"thresholds": [limit]},
                    "load_assignment": {
                        "cluster_name": "bare",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": DOWNSTREAM_CONNECTIONS,
                        "max_active_downstream_connections": 100000,
                    },
                }
            ]
        },
    }


async def wait_envoy_live(admin_port: int, child_running: Callable[[], bool]) -> None:
    """Until Envoy's admin ``/ready`` says LIVE (its static listeners then accept)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if not child_running():
                raise RuntimeError("envoy exited at start (see its log)")
            try:
                async with session.get(f"http://127.0.0.1:{admin_port}/ready") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"envoy did not report LIVE on /ready within {START_TIMEOUT_S:g} s")


async def start_envoy(
    supervisor: Supervisor, config: dict[str, Any], run_dir: Path, workers: int = 1
) -> psutil.Process:
    """Envoy from a static config (its admin port already set in it), once LIVE."""
    path = run_dir / "envoy.json"
    path.write_text(json.dumps(config))
    child = await supervisor.start(
        "envoy",
        [
            str(envoy_binary()),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            str(workers),
            "-l",
            "warning",
        ],
    )
    admin = int(config["admin"]["address"]["socket_address"]["port_value"])
    await wait_envoy_live(admin, lambda: child.running)
    return psutil.Process(child.pid)
