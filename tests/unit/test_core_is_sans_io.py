"""The pure cores are plain logic: no event loop, no network client, no wall clock — not
directly, and not through any module of the project they import (followed transitively).

Two sets of modules are held to it: the sidecar's sans-I/O core (``sidecar/core/``, by
folder) and the control plane's pure side (named below: its asyncio halves live in modules
of their own, as go-control-plane keeps ``pkg/cache`` types apart from ``pkg/server``).
Reading files (the policy, its certificates) is allowed: it is neither a loop, nor the
network, nor time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.import_graph import modules, reachable

FORBIDDEN = {"asyncio", "aiohttp", "redis", "grpc", "socket", "time", "trio", "anyio", "uvloop"}

# The control plane's pure modules. Their asyncio counterparts, never to be imported from
# here: snapshot_cache (the cache streams wait on), membership_watcher (follows the
# registry), ads_service (gRPC), publisher (feeds the cache and metrics), policy_watcher,
# fleet_admin (the fleet API, aiohttp), fleet_events (gathers what the summary is made of).
PURE_XDS = (
    "xds_server.sotw",  # the SotW protocol machine
    "xds_server.delta",  # the Delta protocol machine
    "xds_server.outcomes",  # what the machines report
    "xds_server.snapshot",  # Resource, TypeSnapshot, Snapshot, build_snapshot
    "xds_server.membership",  # Endpoint, Membership, group_by_pool
    "xds_server.builders",  # policy + membership -> resources
    "xds_server.edge_routes",  # each Envoy's own routes
    "xds_server.ledger",  # what each Envoy holds (times given by the caller)
    "xds_server.drain_records",  # fleet drains as data (started_at given by the caller)
    "xds_server.fleet_summary",  # the fleet page's summary (its I/O: fleet_events)
    "xds_server.pod_history",  # pods that left lately (the clock given by the caller)
    "xds_server.policy",  # the policy model
    "xds_server.policy_loader",  # the policy file, read and checked
    "xds_server.policy_diff",  # the dry run
    "xds_server.certificates",
    "xds_server.type_urls",
    "xds_server.envoy_types",
    "xds_server.wire",
)


def _sidecar_core() -> list[str]:
    return [name for name, _ in modules() if name.split(".")[:2] == ["sidecar", "core"]]


def _xds_pure() -> list[str]:
    known = {name for name, _ in modules()}
    assert [name for name in PURE_XDS if name not in known] == []  # a rename must not hide one
    return list(PURE_XDS)


def _reaches_io(start: list[str], root: Path | None = None) -> list[str]:
    found = reachable(start) if root is None else reachable(start, root)
    return sorted(
        f"{module} (imported by {importer})"
        for module, importer in found.items()
        if module.split(".")[0] in FORBIDDEN
    )


@pytest.mark.parametrize(
    ("pure", "at_least"),
    [(_sidecar_core, 8), (_xds_pure, len(PURE_XDS))],
    ids=["sidecar-core", "xds-pure"],
)
def test_no_pure_module_reaches_an_event_loop_a_network_client_or_the_clock(
    pure: Callable[[], list[str]], at_least: int
) -> None:
    start = pure()
    assert len(start) >= at_least
    assert _reaches_io(start) == []


PLANTED = {
    # a core module reaching the clock through a base module
    "sidecar-core": (
        {
            "sidecar/core/__init__.py": "from . import rules\n",
            "sidecar/core/rules.py": "from wsfleet import clock\n",
            "wsfleet/__init__.py": "",
            "wsfleet/clock.py": "import time\n",
        },
        ["sidecar.core"],
        ["time (imported by wsfleet.clock)"],
    ),
    # a protocol machine reaching an event loop through the types it takes (as sotw did
    # while the snapshot types shared a module with the asyncio cache)
    "xds-pure": (
        {
            "xds_server/__init__.py": "",
            "xds_server/sotw.py": "from xds_server.snapshot import Snapshot\n",
            "xds_server/snapshot.py": "import asyncio\n\nclass Snapshot: ...\n",
        },
        ["xds_server.sotw"],
        ["asyncio (imported by xds_server.snapshot)"],
    ),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_the_check_follows_imports_through_other_modules(case: str, tmp_path: Path) -> None:
    files, start, expected = PLANTED[case]
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    assert _reaches_io(start, tmp_path) == expected
