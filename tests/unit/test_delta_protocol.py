"""The Delta ADS state machine, driven request by request with no sockets."""

from __future__ import annotations

from tests.unit.xds_node import RecordingNode
from xds_server import type_urls as T
from xds_server.delta import DeltaRequest, DeltaStream
from xds_server.snapshot import Snapshot, build_snapshot


def _snapshot(previous: Snapshot | None = None, **timeouts: int) -> Snapshot:
    specs = {
        T.CLUSTER: {
            name: {"name": name, "type": "EDS", "connect_timeout": f"{seconds}s"}
            for name, seconds in timeouts.items()
        },
        T.ENDPOINT: {name: {"cluster_name": name} for name in timeouts},
    }
    return build_snapshot(specs, previous)


def _stream() -> DeltaStream:
    return DeltaStream(RecordingNode("delta"))


def _ack(response, type_url=T.CLUSTER) -> DeltaRequest:  # type: ignore[no-untyped-def]
    return DeltaRequest(type_url, response_nonce=response.nonce)


def test_a_wildcard_subscription_gets_every_resource_once() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1, b=2)
    [first] = stream.on_request(DeltaRequest(T.CLUSTER), snapshot)
    assert [r.name for r in first.resources] == ["a", "b"]
    assert stream.on_request(_ack(first), snapshot) == []


def test_only_changed_resources_are_sent_and_removed_ones_named() -> None:
    stream = _stream()
    one = _snapshot(a=1, b=2)
    [first] = stream.on_request(DeltaRequest(T.CLUSTER), one)
    stream.on_request(_ack(first), one)
    two = _snapshot(one, a=1, c=3)
    [update] = stream.on_snapshot(two)
    assert [r.name for r in update.resources] == ["c"]
    assert update.removed == ("b",)


def test_initial_versions_spare_what_the_envoy_already_has() -> None:
    """After a control-plane restart Envoy reports what it has: nothing unchanged is re-sent."""
    snapshot = _snapshot(a=1, b=2)
    versions = {name: r.version for name, r in snapshot.of(T.CLUSTER).resources.items()}
    versions["gone"] = "old"
    stream = _stream()
    [first] = stream.on_request(DeltaRequest(T.CLUSTER, initial_versions=versions), snapshot)
    assert first.resources == ()
    assert first.removed == ("gone",)


def test_named_subscriptions_follow_subscribe_and_unsubscribe() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1, b=2)
    [first] = stream.on_request(DeltaRequest(T.ENDPOINT, subscribe=("a",)), snapshot)
    assert [r.name for r in first.resources] == ["a"]
    [more] = stream.on_request(
        DeltaRequest(T.ENDPOINT, subscribe=("b",), response_nonce=first.nonce), snapshot
    )
    assert [r.name for r in more.resources] == ["b"]
    assert (
        stream.on_request(
            DeltaRequest(T.ENDPOINT, unsubscribe=("a",), response_nonce=more.nonce), snapshot
        )
        == []
    )


def test_a_nack_is_recorded_and_the_rejected_versions_are_not_resent() -> None:
    stream = _stream()
    one = _snapshot(a=1)
    [first] = stream.on_request(DeltaRequest(T.CLUSTER), one)
    stream.on_request(_ack(first), one)
    bad = _snapshot(one, a=1, b=0)
    [rejected] = stream.on_snapshot(bad)
    nack = DeltaRequest(T.CLUSTER, response_nonce=rejected.nonce, error_message="b: bad timeout")
    assert stream.on_request(nack, bad) == []
    status = stream.report.status.of(T.CLUSTER)
    assert (status.nacks, status.nack_message) == (1, "b: bad timeout")
    assert stream.on_snapshot(_snapshot(bad, a=1, b=0)) == []
    [fixed] = stream.on_snapshot(_snapshot(bad, a=1, b=5))
    assert [r.name for r in fixed.resources] == ["b"]


def test_an_acked_cluster_update_pushes_its_endpoints_again() -> None:
    """Delta Envoys do not re-subscribe EDS after a cluster update (docs/envoy-behaviours.md, 2)."""
    stream = _stream()
    one = _snapshot(a=1)
    [clusters] = stream.on_request(DeltaRequest(T.CLUSTER), one)
    [endpoints] = stream.on_request(DeltaRequest(T.ENDPOINT, subscribe=("a",)), one)
    stream.on_request(_ack(endpoints, T.ENDPOINT), one)
    [eds_after_cds_ack] = stream.on_request(_ack(clusters), one)
    assert eds_after_cds_ack.type_url == T.ENDPOINT
    assert [r.name for r in eds_after_cds_ack.resources] == ["a"]
    stream.on_request(_ack(eds_after_cds_ack, T.ENDPOINT), one)
    two = _snapshot(one, a=9)  # cluster changed, its endpoints did not
    [cds] = stream.on_snapshot(two)
    assert cds.type_url == T.CLUSTER
    [eds] = stream.on_request(_ack(cds), two)
    assert (eds.type_url, [r.name for r in eds.resources]) == (T.ENDPOINT, ["a"])


def test_a_stale_nonce_is_not_an_ack_but_its_subscription_counts() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1, b=2)
    [first] = stream.on_request(DeltaRequest(T.ENDPOINT, subscribe=("a",)), snapshot)
    stale = DeltaRequest(T.ENDPOINT, subscribe=("b",), response_nonce="old")
    assert stream.on_request(stale, snapshot) == []  # still waiting for the ACK of `first`
    [more] = stream.on_request(_ack(first, T.ENDPOINT), snapshot)
    assert [r.name for r in more.resources] == ["b"]
    assert stream.report.status.of(T.ENDPOINT).acks == 1
