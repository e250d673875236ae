"""When a freshly formed Redis Cluster counts as settled: every node sees the same roles
and config epochs, and no two masters share an epoch."""

from __future__ import annotations

from wsfleet_tools.launcher.redis_cluster import _settled, _view


def _nodes(epochs: dict[str, str], replica_epoch: str) -> dict[str, dict[str, object]]:
    nodes: dict[str, dict[str, object]] = {
        f"127.0.0.1:{7000 + n}": {
            "node_id": node_id,
            "flags": "myself,master" if n == 0 else "master",
            "master_id": "-",
            "epoch": epoch,
        }
        for n, (node_id, epoch) in enumerate(epochs.items())
    }
    nodes["127.0.0.1:7100"] = {
        "node_id": "r1",
        "flags": "slave",
        "master_id": "m1",
        "epoch": replica_epoch,
    }
    return nodes


def test_a_cluster_whose_nodes_agree_on_distinct_epochs_is_settled() -> None:
    view = _view(_nodes({"m1": "2", "m2": "1", "m3": "3"}, "2"))
    assert _settled([view, dict(view), dict(view)])


def test_a_replica_that_holds_its_masters_old_epoch_is_not() -> None:
    current = _view(_nodes({"m1": "2", "m2": "1", "m3": "3"}, "2"))
    stale = _view(_nodes({"m1": "1", "m2": "1", "m3": "3"}, "1"))
    assert not _settled([current, stale])


def test_masters_that_share_an_epoch_are_not() -> None:
    view = _view(_nodes({"m1": "1", "m2": "1", "m3": "3"}, "1"))
    assert not _settled([view, dict(view)])
    assert not _settled([])


def test_the_myself_flag_does_not_make_views_differ() -> None:
    mine = _nodes({"m1": "2", "m2": "1"}, "2")
    theirs = {
        key: dict(node, flags=str(node["flags"]).replace("myself,", ""))
        for key, node in mine.items()
    }
    assert _settled([_view(mine), _view(theirs)])
