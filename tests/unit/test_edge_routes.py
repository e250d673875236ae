"""Each Envoy's own RDS: its name on every forwarded request (a client's value replaced),
``/edge/ready`` answered by Envoy, and 503 + Retry-After to everything while it drains;
only RDS differs per node, and a drain changes only that node's."""

from __future__ import annotations

from typing import Any

from xds_server import type_urls
from xds_server.builders import build_resources
from xds_server.edge_routes import (
    EDGE_HEADER,
    READY_PATH,
    EdgeRoutes,
    edge_route_configuration,
)
from xds_server.policy_loader import default_bundle
from xds_server.snapshot import build_snapshot

GROUP_ROUTES: dict[str, Any] = {
    "name": "clients",
    "virtual_hosts": [
        {"name": "clients", "domains": ["*"], "routes": [{"name": "ws", "match": {"prefix": "/"}}]}
    ],
}


def _routes(spec: dict[str, Any]) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = spec["virtual_hosts"][0]["routes"]
    return routes


def test_a_serving_node_answers_ready_itself_and_names_itself_on_every_request() -> None:
    spec = edge_route_configuration(GROUP_ROUTES, "envoy-2", draining=False)
    ready, *rest = _routes(spec)
    assert ready["match"] == {"prefix": READY_PATH}
    assert ready["direct_response"]["status"] == 200
    assert rest == _routes(GROUP_ROUTES)  # the group's routes, unchanged, after it
    assert spec["request_headers_to_add"] == [
        {
            "header": {"key": EDGE_HEADER, "value": "envoy-2"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",  # a client's value is replaced
        }
    ]
    assert GROUP_ROUTES["virtual_hosts"][0]["routes"] == [{"name": "ws", "match": {"prefix": "/"}}]


def test_a_draining_node_fails_ready_and_refuses_everything_else_with_retry_after() -> None:
    spec = edge_route_configuration(GROUP_ROUTES, "envoy-2", draining=True)
    ready, refused, *rest = _routes(spec)
    assert ready["direct_response"]["status"] == 503
    assert refused["match"] == {"prefix": "/"}
    assert refused["direct_response"]["status"] == 503
    assert "draining" in refused["direct_response"]["body"]["inline_string"]
    assert [h["header"]["key"] for h in refused["response_headers_to_add"]] == ["retry-after"]
    assert rest == _routes(GROUP_ROUTES)


def _snapshot() -> Any:
    bundle = default_bundle()
    return build_snapshot(build_resources(bundle.policy, {}), None)


def test_nodes_differ_only_in_rds_and_a_drain_changes_only_that_nodes() -> None:
    edges = EdgeRoutes()
    group = _snapshot()
    one, two = edges.for_node(group, "envoy-1"), edges.for_node(group, "envoy-2")
    assert one is not None and two is not None
    for url, typed in group.types.items():
        if url != type_urls.ROUTE:
            assert one.of(url) is typed and two.of(url) is typed  # shared, not rebuilt
    assert one.of(type_urls.ROUTE).version != two.of(type_urls.ROUTE).version
    assert edges.for_node(group, "envoy-1").of(type_urls.ROUTE) is one.of(type_urls.ROUTE)

    assert edges.set_draining({"envoy-2"}) is True
    assert edges.set_draining({"envoy-2"}) is False
    after_one, after_two = edges.for_node(group, "envoy-1"), edges.for_node(group, "envoy-2")
    assert after_one is not None and after_two is not None
    assert after_one.of(type_urls.ROUTE) is one.of(type_urls.ROUTE)
    assert after_two.of(type_urls.ROUTE).version != two.of(type_urls.ROUTE).version

    edges.set_draining(())
    undrained = edges.for_node(group, "envoy-2")
    assert undrained is not None
    assert undrained.of(type_urls.ROUTE).version == two.of(type_urls.ROUTE).version
