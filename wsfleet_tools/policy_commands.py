"""``wsfleet policy diff``: a dry run of a policy edit, offline or against a live server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wsfleet.errors import ConfigError
from wsfleet_tools.admin_client import AdminClient


def diff_command(files: list[Path], server: str | None, token: str | None = None) -> str:
    from xds_server.membership import Endpoint
    from xds_server.policy_diff import diff_versions, render, resource_versions
    from xds_server.policy_loader import load_bundle

    if server is None:
        if len(files) != 2:
            raise ConfigError("policy diff takes OLD NEW (or --server URL NEW)")
        old, new = (load_bundle(path) for path in files)
        return render(diff_versions(resource_versions(old, {}), resource_versions(new, {})))
    if len(files) != 1:
        raise ConfigError("policy diff --server URL takes one file: NEW")
    client = AdminClient(server, token or "")
    current = client.call("GET", "/debug/policy")
    membership = {
        pool: tuple(Endpoint(**endpoint) for endpoint in endpoints)
        for pool, endpoints in client.call("GET", "/debug/membership").items()
    }
    config = client.call("GET", "/debug/config")
    served = {
        short: {name: entry["version"] for name, entry in typed["resources"].items()}
        for short, typed in config.items()
    }
    new = load_bundle(files[0])
    override = current.get("listener_port_override")
    if override is not None:
        new = dataclasses.replace(new, policy=new.policy.with_listener_port(int(override)))
    return render(diff_versions(served, resource_versions(new, membership)))
