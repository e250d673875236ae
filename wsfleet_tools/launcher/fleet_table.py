"""The table ``wsfleet up`` prints once the fleet is up: where each part listens, and the
commands that reach it (with ``--state-dir`` when it is not the default one)."""

from __future__ import annotations

from wsfleet.settings import DEFAULT_STATE_DIR, redacted_url
from wsfleet_tools.launcher.envoy_tier import EnvoyTier
from wsfleet_tools.launcher.fleet_model import FleetContext


def fleet_table(ctx: FleetContext, envoys: EnvoyTier, api_url: str) -> str:
    info = ctx.info
    client_urls = envoys.client_urls
    here = "" if ctx.state_dir == DEFAULT_STATE_DIR.resolve() else f" --state-dir {ctx.state_dir}"
    rows = [
        (
            "clients (WebSocket)",
            f"{envoys.client_url}?user=<id>  (token: wsfleet token --user <id>{here})",
        ),
        (
            "server API",
            f"{api_url}/<method>  (key in {ctx.keys.api_key_path}; "
            f"wsfleet publish CHANNEL DATA{here})"
            if info.apis
            else "none (the policy routes no /api/ to an `api` pool)",
        ),
        (
            "operate",
            f"wsfleet pods{here}  (drain, undrain, stop, disconnect, rollout, envoys)",
        ),
        (
            "control-plane admin",
            f"http://127.0.0.1:{info.xds_admin_port}/  (the fleet page; wsfleet "
            f"status{here})  /metrics  /debug/nodes",
        ),
        (
            "xDS (ADS gRPC)",
            ", ".join(f"127.0.0.1:{grpc}" for grpc, _ in info.xds_replicas.values())
            + f"  ({ctx.options.api_type})",
        ),
        *(
            (
                f"{name} ({envoy.zone})",
                f"clients {client_urls[name]}  admin "
                f"http://127.0.0.1:{envoy.admin_port}/config_dump  /clusters",
            )
            for name, envoy in info.envoys.items()
        ),
        *(
            (
                (
                    "l4 (tcp_proxy)",
                    f"clients {envoys.client_url}  -> {len(info.envoys)} Envoys  admin "
                    f"http://127.0.0.1:{ctx.l4_admin_port}/clusters",
                ),
            )
            if ctx.l4_admin_port
            else ()
        ),
        *((("chat (browser)", info.chat_url),) if info.chat_url else ()),
        (
            "Redis",
            redacted_url(info.redis_url) + ("  (embedded)" if info.redis_embedded else ""),
        ),
        *((f"{name} (gRPC)", f"127.0.0.1:{port}") for name, port in info.backend_ports.items()),
    ]
    for name, (port, admin_port) in info.apis.items():
        rows.append(
            (
                name,
                f"http://127.0.0.1:{port}/api  admin http://127.0.0.1:{admin_port}/metrics",
            )
        )
    for sidecar in info.sidecars.values():
        rows.append(
            (
                sidecar.pod_id,
                f"ws://127.0.0.1:{sidecar.port}/ws  "
                f"admin http://127.0.0.1:{sidecar.admin_port}/metrics  (pid {sidecar.child.pid})",
            )
        )
    rows.append(("state dir", str(ctx.state_dir)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name.ljust(width)}  {where}" for name, where in rows)
