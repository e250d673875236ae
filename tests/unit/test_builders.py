"""Resource builders: policy + membership -> Envoy resources that Envoy's types accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server import envoy_types
from xds_server import type_urls as T
from xds_server.builders import NodeGroup, build_resources
from xds_server.membership import Endpoint
from xds_server.policy_loader import (
    PolicyError,
    default_policy_text,
    load_policy_file,
    parse_policy,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "policy.example.yaml"


def _endpoint(pod: str, region: str = "local", draining: bool = False) -> Endpoint:
    return Endpoint(pod, "127.0.0.1", 9000 + int(pod[-1]), draining, region, f"{region}-1")


def test_every_resource_of_the_full_example_encodes_as_envoy_protobuf() -> None:
    policy = load_policy_file(EXAMPLE)
    resources = build_resources(policy, {"gateways": (_endpoint("p1", "region-a"),)})
    for type_url, by_name in resources.items():
        for spec in by_name.values():
            assert envoy_types.encode(type_url, spec)  # strict: unknown fields raise


def test_the_tls_listener_takes_its_certificate_over_sds() -> None:
    policy = load_policy_file(EXAMPLE)
    tls = build_resources(policy, {})[T.LISTENER]["public-tls"]
    socket = tls["filter_chains"][0]["transport_socket"]["typed_config"]
    [config] = socket["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert config == {"name": "edge", "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def test_an_upgrade_rate_limit_lives_on_the_route_not_the_listener() -> None:
    policy = load_policy_file(EXAMPLE)
    resources = build_resources(policy, {})
    route = resources[T.ROUTE]["public"]["virtual_hosts"][0]["routes"][0]
    bucket = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]["token_bucket"]
    assert bucket == {"max_tokens": 1000, "tokens_per_fill": 500, "fill_interval": "1s"}
    # the listener has the filter, bucket-less, whether or not any route limits
    unlimited = parse_policy(default_policy_text())
    assert (
        build_resources(unlimited, {})[T.LISTENER]
        == build_resources(unlimited.model_copy(), {})[T.LISTENER]
    )
    [limit_filter, _router] = resources[T.LISTENER]["public"]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]["http_filters"]
    assert "token_bucket" not in limit_filter["typed_config"]


def test_only_websocket_routes_allow_the_upgrade() -> None:
    policy = load_policy_file(EXAMPLE)
    routes = build_resources(policy, {})[T.ROUTE]["public"]["virtual_hosts"][0]["routes"]
    upgrades = {r["name"]: r["route"].get("upgrade_configs") for r in routes}
    assert upgrades["websocket"] is None
    assert upgrades["events"] == [{"upgrade_type": "websocket", "enabled": False}]


def test_circuit_breakers_admit_far_more_than_envoys_default_1024() -> None:
    cluster = build_resources(parse_policy(default_policy_text()), {})[T.CLUSTER]["gateways"]
    [threshold] = cluster["circuit_breakers"]["thresholds"]
    assert min(threshold["max_connections"], threshold["max_pending_requests"]) > 1024


def test_a_reconnect_burst_is_not_capped_by_envoys_default_of_3_concurrent_retries() -> None:
    cluster = build_resources(parse_policy(default_policy_text()), {})[T.CLUSTER]["gateways"]
    [threshold] = cluster["circuit_breakers"]["thresholds"]
    assert threshold["max_retries"] >= 10_000


def test_locality_priorities_make_the_standby_region_priority_one() -> None:
    policy = load_policy_file(EXAMPLE)
    members = {"gateways": (_endpoint("p1", "region-b"), _endpoint("p2", "region-a"))}
    cla = build_resources(policy, members)[T.ENDPOINT]["gateways"]
    priorities = {e["locality"]["region"]: e.get("priority", 0) for e in cla["endpoints"]}
    assert priorities == {"region-a": 0, "region-b": 1}


def test_prefer_local_region_puts_each_groups_own_region_first() -> None:
    policy = load_policy_file(EXAMPLE)
    pool = policy.pools[0].model_copy(update={"prefer_local_region": True})
    policy = policy.model_copy(update={"pools": [pool]})
    members = {"gateways": (_endpoint("p1", "region-b"), _endpoint("p2", "region-a"))}
    cla = build_resources(policy, members, group=NodeGroup("region-b"))[T.ENDPOINT]["gateways"]
    priorities = {e["locality"]["region"]: e.get("priority", 0) for e in cla["endpoints"]}
    assert priorities == {"region-a": 1, "region-b": 0}


def test_priorities_have_no_gaps() -> None:
    policy = load_policy_file(EXAMPLE)  # region-a, region-b listed; region-c is not
    members = {"gateways": (_endpoint("p1", "region-c"), _endpoint("p2", "region-a"))}
    cla = build_resources(policy, members)[T.ENDPOINT]["gateways"]
    priorities = {e["locality"]["region"]: e.get("priority", 0) for e in cla["endpoints"]}
    assert priorities == {"region-a": 0, "region-c": 1}


def test_a_draining_pod_stays_in_eds_marked_draining() -> None:
    policy = parse_policy(default_policy_text())
    members = {"gateways": (_endpoint("p1"), _endpoint("p2", draining=True))}
    cla = build_resources(policy, members)[T.ENDPOINT]["gateways"]
    health = {
        lb["endpoint"]["hostname"]: lb["health_status"]
        for locality in cla["endpoints"]
        for lb in locality["lb_endpoints"]
    }
    assert health == {"p1": "HEALTHY", "p2": "DRAINING"}


def test_request_ids_are_off_unless_a_listener_asks_for_them() -> None:
    def hcm(text: str) -> dict[str, object]:
        listener = build_resources(parse_policy(text, "p.yaml"), {})[T.LISTENER]["public"]
        return listener["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[no-any-return]

    quiet = hcm(default_policy_text())
    loud = hcm(
        default_policy_text().replace(
            "    port: 8080\n", "    port: 8080\n    request_ids: true\n", 1
        )
    )
    assert quiet["generate_request_id"] is False
    assert loud["generate_request_id"] is True


def test_retries_of_new_sessions_outlast_the_health_check_that_removes_a_dead_gateway() -> None:
    policy = parse_policy(default_policy_text())
    resources = build_resources(policy, {})
    [entry] = [
        route
        for config in resources[T.ROUTE].values()
        for host in config["virtual_hosts"]
        for route in host["routes"]
        if route["name"] == "websocket"
    ]
    retry = entry["route"]["retry_policy"]
    base = float(retry["retry_back_off"]["base_interval"].rstrip("s"))
    cap = float(retry["retry_back_off"]["max_interval"].rstrip("s"))
    longest = sum(min(cap, base * 2**i) for i in range(retry["num_retries"]))
    check = policy.pool("gateways").health_check
    assert check is not None
    # full jitter: the expected total is half the longest; it must still outlast a check
    assert longest / 2 > check.interval_s
    # never a started session; a gateway's 503 (draining, no backend) goes to another gateway,
    # refusals that depend on the client (401, 403, 429) are not retried
    assert retry["retry_on"] == "connect-failure,refused-stream,retriable-status-codes"
    assert retry["retriable_status_codes"] == [503]
    assert retry["retry_host_predicate"][0]["name"].endswith("previous_hosts")


def test_drained_pods_stay_in_eds_as_draining() -> None:
    from wsfleet.registry import PodRecord, PodState
    from xds_server.membership import group_by_pool

    pods = [
        PodRecord(f"p-{state}", "gateways", "127.0.0.1", 9000 + n, 9100 + n, state=state)
        for n, state in enumerate(PodState)
    ]
    policy = parse_policy(default_policy_text())
    assignment = build_resources(policy, group_by_pool(pods))[T.ENDPOINT]["gateways"]
    health = {
        endpoint["endpoint"]["hostname"]: endpoint["health_status"]
        for locality in assignment["endpoints"]
        for endpoint in locality["lb_endpoints"]
    }
    assert health == {"p-serving": "HEALTHY", "p-draining": "DRAINING", "p-drained": "DRAINING"}


def test_each_hash_policy_is_terminal_so_the_first_key_present_decides() -> None:
    resources = build_resources(parse_policy(default_policy_text()), {})
    routes = [
        route
        for config in resources[T.ROUTE].values()
        for host in config["virtual_hosts"]
        for route in host["routes"]
    ]
    policies = [p for route in routes for p in route["route"]["hash_policy"]]
    assert policies and all(p["terminal"] is True for p in policies)
    assert [next(iter(k for k in p if k != "terminal")) for p in routes[0]["route"]["hash_policy"]][
        :2
    ] == ["header", "query_parameter"]


def test_slow_and_idle_clients_are_cut_by_envoy_and_envoy_closes_before_the_gateway() -> None:
    import dataclasses

    from wsfleet.settings import SidecarSettings
    from xds_server.builders import UPSTREAM_HTTP_OPTIONS_NAME

    resources = build_resources(parse_policy(default_policy_text(), "p.yaml"), {})
    listener = resources[T.LISTENER]["public"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["request_headers_timeout"] == "10s"
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "60s"}
    cluster = resources[T.CLUSTER]["gateways"]
    options = cluster["typed_extension_protocol_options"][UPSTREAM_HTTP_OPTIONS_NAME]
    upstream_idle = float(options["common_http_protocol_options"]["idle_timeout"].rstrip("s"))
    # Envoy never reuses a pooled connection that the gateway is closing
    fields = {field.name: field for field in dataclasses.fields(SidecarSettings)}
    assert upstream_idle < fields["http_idle_timeout_s"].default
    decoded = envoy_types.decode(T.CLUSTER, envoy_types.encode(T.CLUSTER, cluster))
    assert "typedExtensionProtocolOptions" in decoded or "typed_extension_protocol_options" in (
        decoded
    )


def test_a_node_group_with_its_own_listener_port_differs_from_the_default_only_there() -> None:
    policy = parse_policy(default_policy_text())
    members = {"gateways": (_endpoint("pod-1"),)}
    default = build_resources(policy, members)
    own = build_resources(policy, members, group=NodeGroup(None, 9001))
    first = policy.listeners[0].name
    address = own[T.LISTENER][first]["address"]["socket_address"]
    assert address["port_value"] == 9001
    assert default[T.LISTENER][first]["address"]["socket_address"]["port_value"] != 9001
    for url in (T.ROUTE, T.CLUSTER, T.ENDPOINT):  # the rest is the same, byte for byte
        assert own[url] == default[url]


def test_node_group_keys_round_trip() -> None:
    for group in (NodeGroup(), NodeGroup("eu"), NodeGroup("eu", 9001), NodeGroup(None, 9001)):
        assert NodeGroup.from_key(group.key) == group
    assert NodeGroup().key == "*" and NodeGroup("eu", 9001).key == "eu@9001"


def test_websocket_routes_have_no_stream_idle_timer_and_gateways_get_tcp_keepalive() -> None:
    """Envoy frees an upgraded stream's idle timer when its route says 0s; the gateways'
    heartbeats and the upstream connections' TCP keepalive and user timeout take its place."""
    from xds_server.policy import RouteKind

    text = default_policy_text().replace(
        "    kind: sse\n", "    kind: sse\n    stream_idle_timeout_s: 120\n", 1
    )
    policy = parse_policy(text)
    resources = build_resources(policy, {})
    routes = {
        route["name"]: route["route"]
        for config in resources[T.ROUTE].values()
        for host in config["virtual_hosts"]
        for route in host["routes"]
    }
    kinds = {route.name: route.kind for route in policy.routes}
    for name, action in routes.items():
        if kinds[name] is RouteKind.WEBSOCKET:
            assert action["idle_timeout"] == "0s", name
        elif name == "events":
            assert action["idle_timeout"] == "120s"  # a route's own setting wins
        else:
            assert "idle_timeout" not in action, name  # Envoy's 5 min
    for name, cluster in resources[T.CLUSTER].items():
        decoded = envoy_types.decode(T.CLUSTER, envoy_types.encode(T.CLUSTER, cluster))
        # probes start after two heartbeat intervals of silence; a dead upstream goes in 60 s
        assert decoded["upstreamConnectionOptions"]["tcpKeepalive"] == {
            "keepaliveTime": 30,
            "keepaliveInterval": 10,
            "keepaliveProbes": 3,
        }, name
        (option,) = decoded["upstreamBindConfig"]["socketOptions"]
        assert (option["level"], option["name"], option["intValue"]) == (
            "6",  # IPPROTO_TCP
            "18",  # TCP_USER_TIMEOUT
            "60000",  # ms: what keepalive takes, also while data waits for an ACK
        ), name
        assert "state" not in option  # STATE_PREBIND, the default: set before connect
        assert "sourceAddress" not in decoded["upstreamBindConfig"]  # not bound: connect picks
    for config in resources[T.ROUTE].values():  # as Envoy reads it: 0s, not absent
        decoded = envoy_types.decode(T.ROUTE, envoy_types.encode(T.ROUTE, config))
        for route in decoded["virtualHosts"][0]["routes"]:
            if kinds[route["name"]] is RouteKind.WEBSOCKET:
                assert route["route"]["idleTimeout"] == "0s"


def test_a_pools_upstream_keepalive_sets_the_probes_and_the_user_timeout() -> None:
    text = default_policy_text().replace(
        "  - name: gateways\n",
        "  - name: gateways\n    upstream_keepalive: {time_s: 5, interval_s: 2, probes: 4}\n",
        1,
    )
    cluster = build_resources(parse_policy(text), {})[T.CLUSTER]["gateways"]
    decoded = envoy_types.decode(T.CLUSTER, envoy_types.encode(T.CLUSTER, cluster))
    assert decoded["upstreamConnectionOptions"]["tcpKeepalive"] == {
        "keepaliveTime": 5,
        "keepaliveInterval": 2,
        "keepaliveProbes": 4,
    }
    assert decoded["upstreamBindConfig"]["socketOptions"][0]["intValue"] == "13000"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("{time_s: 0}", "greater than or equal to 1"),
        ("{probes: 21}", "less than or equal to 20"),
        ("{every_s: 3}", "upstream_keepalive.every_s: unknown key"),
    ],
)
def test_a_bad_upstream_keepalive_is_refused(setting: str, message: str) -> None:
    text = default_policy_text().replace(
        "  - name: gateways\n", f"  - name: gateways\n    upstream_keepalive: {setting}\n", 1
    )
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)
