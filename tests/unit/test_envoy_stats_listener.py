"""The stats listener Prometheus scrapes: GET /stats/prometheus from the admin, 404 for
everything else, and none unless asked for."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from wsfleet.errors import StartupError
from wsfleet_tools.launcher.envoy_bootstrap import BootstrapParams, render_bootstrap


def _render(**overrides: Any) -> dict[str, Any]:
    params = BootstrapParams(node_id="envoy-1", xds_port=18000, **overrides)
    rendered: dict[str, Any] = yaml.safe_load(render_bootstrap(params))
    return rendered


def test_without_a_stats_port_there_is_no_stats_listener() -> None:
    static = _render()["static_resources"]
    assert static["listeners"] == []
    assert [c["name"] for c in static["clusters"]] == ["xds_cluster"]


def test_the_stats_port_forwards_only_get_stats_prometheus_to_the_admin() -> None:
    config = _render(admin_port=9901, stats_host="0.0.0.0", stats_port=9902)
    static = config["static_resources"]
    (listener,) = static["listeners"]
    assert listener["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 9902}
    assert config["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    stats, rest = host["routes"]
    assert stats["match"] == {
        "path": "/stats/prometheus",
        "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
    }
    assert stats["route"] == {"cluster": "wsfleet.envoy_admin"}
    assert rest["match"] == {"prefix": "/"} and rest["direct_response"]["status"] == 404
    admin = {c["name"]: c for c in static["clusters"]}["wsfleet.envoy_admin"]
    (endpoints,) = admin["load_assignment"]["endpoints"]
    (target,) = endpoints["lb_endpoints"]
    assert target["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9901,
    }


def test_a_stats_port_needs_a_fixed_admin_port() -> None:
    with pytest.raises(StartupError, match="fixed admin port"):
        _render(stats_port=9902)
