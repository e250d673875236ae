"""Policy files: valid ones load; every invalid one is refused with file, line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from xds_server.policy import LbPolicy
from xds_server.policy_loader import (
    PolicyError,
    default_policy_text,
    load_policy_file,
    parse_policy,
)

DEFAULT = default_policy_text()


def test_the_embedded_default_policy_is_valid() -> None:
    policy = parse_policy(DEFAULT)
    assert [listener.port for listener in policy.listeners] == [8080]
    assert policy.pool("gateways").lb_policy is LbPolicy.MAGLEV
    assert policy.pool("gateways").max_connections > 1024  # Envoy's default cap would bite


def test_inconsistent_namespace_options_name_the_namespace_and_its_line() -> None:
    edited = DEFAULT.replace("      presence: true", "      presence: false", 1)
    line = next(n for n, text in enumerate(edited.splitlines(), 1) if "- name: chat" in text)
    with pytest.raises(PolicyError) as caught:
        parse_policy(edited, "edited.yaml")
    assert str(caught.value) == (
        f"edited.yaml:{line}: channels.namespaces.0: join_leave needs presence: true"
    )


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("pool: gateways", "pool: nowhere", "routes.0.pool: unknown pool 'nowhere'"),
        ("    kind: websocket", "    knd: websocket", "routes.0.knd: unknown key"),
        (
            "port: 8080",
            "port: 70000",
            "listeners.0.port: Input should be less than or equal to 65535",
        ),
        (
            "routes: [websocket, events, poll, api]",
            "routes: [websocket, websocket]",
            "a second route for path prefix '/ws'",
        ),
        (
            "routes: [websocket, events, poll, api]",
            "routes: [chat]",
            "listeners.0.routes.0: unknown route 'chat'",
        ),
        (
            "lb_policy: maglev",
            "lb_policy: random",
            "pools.0.lb_policy: Input should be 'maglev', 'ring_hash' or 'round_robin'",
        ),
        (
            "path_prefix: /ws",
            "path_prefix: ws",
            "routes.0.path_prefix: String should match pattern",
        ),
        ("kind: websocket", "kind: carrier-pigeon", "routes.0.kind: Input should be"),
        (
            "connect_timeout_s: 2",
            "connect_timeout_s: -1",
            "pools.0.connect_timeout_s: Input should be greater than 0",
        ),
        (
            "history_size: 1000",
            "history_size: 20000",
            "channels.namespaces.1.history_size: Input should be less than or equal to 10000",
        ),
        ("- name: feed", "- name: Feed:x", "channels.namespaces.1.name: String should match"),
    ],
)
def test_an_invalid_policy_names_line_and_problem(old: str, new: str, problem: str) -> None:
    assert old in DEFAULT
    edited = DEFAULT.replace(old, new, 1)
    line = next(n for n, text in enumerate(edited.splitlines(), 1) if new.strip() in text)
    with pytest.raises(PolicyError) as caught:
        parse_policy(edited, "edited.yaml")
    assert problem in str(caught.value)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"edited.yaml:{line}: ")


def test_two_listeners_on_one_port_clash() -> None:
    text = DEFAULT.replace(
        "routes:\n  - name: websocket",
        "  - name: second\n    port: 8080\n    routes: [websocket]\nroutes:\n  - name: websocket",
        1,
    )
    with pytest.raises(
        PolicyError, match=r"listeners.1.port: port 8080 is already used by listener 'public'"
    ):
        parse_policy(text)


def test_broken_yaml_is_refused_with_its_line() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("listeners:\n  - name: [unclosed\n", "broken.yaml")
    assert caught.value.line == 3
    assert "not valid YAML" in str(caught.value)


def test_a_policy_must_be_a_mapping() -> None:
    with pytest.raises(PolicyError, match="a policy is a YAML mapping"):
        parse_policy("- just\n- a list\n")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"nope.yaml: policy file not found"):
        load_policy_file(tmp_path / "nope.yaml")


def test_moving_the_first_listener_keeps_everything_else() -> None:
    policy = parse_policy(DEFAULT).with_listener_port(9999)
    assert policy.listeners[0].port == 9999
    assert policy.routes == parse_policy(DEFAULT).routes
