"""A child restarted by ``wsfleet up`` reports back; only an Envoy's (or the L4 tier's)
admin address changes where the fleet says its Envoys are. Other children write a JSON
ready file (with colons in it) that must be left alone."""

from __future__ import annotations

from pathlib import Path

from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.envoy_tier import EnvoyTier
from wsfleet_tools.launcher.fleet_keys import FleetKeys
from wsfleet_tools.launcher.fleet_model import EnvoyInfo, FleetContext, FleetOptions


def _tier(tmp_path: Path) -> tuple[FleetContext, EnvoyTier]:
    ctx = FleetContext(
        FleetOptions(port=8080), tmp_path, Supervisor(tmp_path / "logs"), FleetKeys(tmp_path)
    )
    ctx.info.envoys["envoy"] = EnvoyInfo("envoy-1", "zone-1", 40001, 50001, 60001)
    ctx.info.envoys["envoy-2"] = EnvoyInfo("envoy-2", "zone-2", 40002, 50002, 60002)
    return ctx, EnvoyTier(ctx)


def test_a_restarted_envoy_keeps_its_node_zone_and_ports_but_its_admin(tmp_path: Path) -> None:
    ctx, tier = _tier(tmp_path)
    assert tier.note_restart("envoy-2", "127.0.0.1:50999") == 40002  # wait on its clients' port
    assert ctx.info.envoys["envoy-2"] == EnvoyInfo("envoy-2", "zone-2", 40002, 50999, 60002)
    assert ctx.info.envoys["envoy"].admin_port == 50001


def test_a_restarted_l4_tier_notes_its_admin_and_waits_on_the_client_port(tmp_path: Path) -> None:
    ctx, tier = _tier(tmp_path)
    assert tier.note_restart("l4", "127.0.0.1:51000") == 8080
    assert ctx.l4_admin_port == 51000


def test_other_children_and_missing_addresses_change_nothing(tmp_path: Path) -> None:
    ctx, tier = _tier(tmp_path)
    before = dict(ctx.info.envoys)
    ready_json = '{"grpc_port": 18000, "admin_port": 8081}'  # what a Python child writes
    assert tier.note_restart("xds", ready_json) is None
    assert tier.note_restart("sidecar-1", ready_json) is None
    assert tier.note_restart("envoy", "") is None
    assert ctx.info.envoys == before and ctx.l4_admin_port == 0
