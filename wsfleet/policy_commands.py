"""``wsfleet policy diff``: a dry run of a policy edit, offline or against a live server."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from wsfleet.errors import ConfigError, StartupError


def _fetch(base_url: str, path: str) -> Any:
    url = base_url.rstrip("/") + path
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise StartupError(f"cannot read {url}: {exc}") from None


def diff_command(files: list[Path], server: str | None) -> str:
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
    current = _fetch(server, "/debug/policy")
    membership = {
        pool: tuple(Endpoint(**endpoint) for endpoint in endpoints)
        for pool, endpoints in _fetch(server, "/debug/membership").items()
    }
    config = _fetch(server, "/debug/config")
    served = {
        short: {name: entry["version"] for name, entry in typed["resources"].items()}
        for short, typed in config.items()
    }
    new = load_bundle(files[0])
    override = current.get("listener_port_override")
    if override is not None:
        new = dataclasses.replace(new, policy=new.policy.with_listener_port(int(override)))
    return render(diff_versions(served, resource_versions(new, membership)))
