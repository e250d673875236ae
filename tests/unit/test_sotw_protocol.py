"""The SotW ADS state machine, driven request by request with no sockets."""

from __future__ import annotations

from tests.unit.xds_node import RecordingNode
from xds_server import type_urls as T
from xds_server.outcomes import Acked, Sent, Subscribed
from xds_server.snapshot import Snapshot, build_snapshot
from xds_server.sotw import Request, SotwStream


def _cla(name: str, port: int) -> dict[str, object]:
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": "127.0.0.1", "port_value": port}
                            }
                        }
                    }
                ]
            }
        ],
    }


def _snapshot(previous: Snapshot | None = None, **ports: int) -> Snapshot:
    specs = {
        T.CLUSTER: {name: {"name": name, "type": "EDS"} for name in ports},
        T.ENDPOINT: {name: _cla(name, port) for name, port in ports.items()},
    }
    return build_snapshot(specs, previous)


def _stream() -> SotwStream:
    return SotwStream(RecordingNode("sotw"))


def test_a_first_request_is_answered_with_everything_of_a_wildcard_type() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1, b=2)
    [response] = stream.on_request(Request(T.CLUSTER), snapshot)
    assert [r.name for r in response.resources] == ["a", "b"]
    assert response.version == snapshot.of(T.CLUSTER).version
    assert response.nonce == "1"


def test_named_types_get_only_the_names_asked_for() -> None:
    stream = _stream()
    [response] = stream.on_request(Request(T.ENDPOINT, resource_names=("b",)), _snapshot(a=1, b=2))
    assert [r.name for r in response.resources] == ["b"]


def test_an_ack_is_recorded_and_answered_by_nothing_new() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER), snapshot)
    assert stream.on_request(Request(T.CLUSTER, sent.version, (), sent.nonce), snapshot) == []
    status = stream.report.status.of(T.CLUSTER)
    assert status.acked_version == sent.version
    assert status.acks == 1


def test_one_response_per_type_is_in_flight_until_acked() -> None:
    stream = _stream()
    first = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER), first)
    second = _snapshot(first, a=1, b=2)
    assert stream.on_snapshot(second) == []  # waiting for the ACK of `sent`
    [update] = stream.on_request(Request(T.CLUSTER, sent.version, (), sent.nonce), second)
    assert [r.name for r in update.resources] == ["a", "b"]
    assert update.version != sent.version


def test_a_stale_nonce_is_ignored() -> None:
    stream = _stream()
    first = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER), first)
    assert stream.on_request(Request(T.CLUSTER, "", (), "not-" + sent.nonce), first) == []
    assert stream.report.status.of(T.CLUSTER).acks == 0


def test_a_nack_is_recorded_and_the_rejected_content_is_never_resent() -> None:
    stream = _stream()
    good = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER), good)
    stream.on_request(Request(T.CLUSTER, sent.version, (), sent.nonce), good)
    bad = _snapshot(good, a=1, b=2)
    [rejected] = stream.on_snapshot(bad)
    nack = Request(T.CLUSTER, sent.version, (), rejected.nonce, error_message="b: invalid")
    assert stream.on_request(nack, bad) == []
    status = stream.report.status.of(T.CLUSTER)
    assert (status.nacks, status.nack_message, status.nacked_version) == (
        1,
        "b: invalid",
        rejected.version,
    )
    assert status.acked_version == sent.version  # the last good version stays recorded
    # the same content again (e.g. a rebuild) is not re-sent ...
    assert stream.on_snapshot(_snapshot(bad, a=1, b=2)) == []
    # ... a different one is
    [fixed] = stream.on_snapshot(_snapshot(bad, a=1, c=3))
    assert [r.name for r in fixed.resources] == ["a", "c"]


def test_a_second_request_with_an_acked_nonce_is_a_resubscribe() -> None:
    """Envoy re-requests EDS this way after a CDS update (docs/envoy-behaviours.md, 1)."""
    stream = _stream()
    snapshot = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.ENDPOINT, resource_names=("a",)), snapshot)
    ack = Request(T.ENDPOINT, sent.version, ("a",), sent.nonce)
    assert stream.on_request(ack, snapshot) == []
    [again] = stream.on_request(ack, snapshot)
    assert [r.name for r in again.resources] == ["a"]
    assert again.nonce != sent.nonce


def test_a_subscription_change_in_an_ack_is_answered() -> None:
    stream = _stream()
    snapshot = _snapshot(a=1, b=2)
    [sent] = stream.on_request(Request(T.ENDPOINT, resource_names=("a",)), snapshot)
    [more] = stream.on_request(Request(T.ENDPOINT, sent.version, ("a", "b"), sent.nonce), snapshot)
    assert [r.name for r in more.resources] == ["a", "b"]


def test_a_new_stream_reporting_an_old_version_is_answered() -> None:
    """After a control-plane restart Envoy's first request carries its last version."""
    stream = _stream()
    snapshot = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER, version_info="1700000000000-deadbeef"), snapshot)
    assert sent.version == snapshot.of(T.CLUSTER).version


def test_a_new_stream_holding_the_current_wildcard_content_gets_nothing_again() -> None:
    """Envoy reconnects (to another replica) with the version it holds: CDS at that
    version is not re-sent, and the next change reaches it as on any stream."""
    snapshot = _snapshot(a=1)
    current = snapshot.of(T.CLUSTER).version
    stream = _stream()
    assert stream.on_request(Request(T.CLUSTER, version_info=current), snapshot) == []
    changed = _snapshot(snapshot, a=1, b=2)
    [pushed] = stream.on_snapshot(changed)
    assert [r.name for r in pushed.resources] == ["a", "b"]
    assert stream.on_snapshot(changed) == []


def test_a_new_stream_for_named_resources_is_answered_even_at_the_current_version() -> None:
    snapshot = _snapshot(a=1, b=2)
    current = snapshot.of(T.ENDPOINT).version
    request = Request(T.ENDPOINT, version_info=current, resource_names=("a", "b"))
    [sent] = _stream().on_request(request, snapshot)
    assert [r.name for r in sent.resources] == ["a", "b"]


def test_a_request_before_any_snapshot_is_answered_when_one_arrives() -> None:
    stream = _stream()
    assert stream.on_request(Request(T.CLUSTER), None) == []
    [sent] = stream.on_snapshot(_snapshot(a=1))
    assert [r.name for r in sent.resources] == ["a"]


def test_an_unrelated_change_does_not_push_named_resources_again() -> None:
    stream = _stream()
    first = _snapshot(a=1, b=2)
    [sent] = stream.on_request(Request(T.ENDPOINT, resource_names=("a",)), first)
    stream.on_request(Request(T.ENDPOINT, sent.version, ("a",), sent.nonce), first)
    assert stream.on_snapshot(_snapshot(first, a=1, b=3)) == []  # only b changed


def test_unknown_types_are_ignored() -> None:
    assert _stream().on_request(Request("type.googleapis.com/nope"), _snapshot(a=1)) == []


def test_the_machine_reports_outcomes_in_order_and_the_ledger_times_them() -> None:
    stream = _stream()
    node = stream.report
    snapshot = _snapshot(a=1)
    [sent] = stream.on_request(Request(T.CLUSTER), snapshot)
    node.now += 0.25  # the ACK comes a quarter second later, by the ledger's clock
    stream.on_request(Request(T.CLUSTER, sent.version, (), sent.nonce), snapshot)
    assert node.outcomes == [
        Subscribed(T.CLUSTER, None),
        Sent(T.CLUSTER, sent.version, sent.nonce),
        Subscribed(T.CLUSTER, None),
        Acked(T.CLUSTER, sent.version),
    ]
    status = node.status.of(T.CLUSTER)
    assert (status.sent_at, status.acked_at, status.last_ack_latency_s) == (1000.0, 1000.25, 0.25)
    assert (status.pushes, status.acks, status.subscribed) == (1, 1, None)
