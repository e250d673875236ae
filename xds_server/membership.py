"""Gateway membership as Envoy should see it: pods per pool, computed from pod records.

Plain values and functions (the builders and the dry run take them); reading the registry
and following its changes is :mod:`xds_server.membership_watcher`'s job.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wsfleet.registry import PodRecord


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A gateway pod as Envoy should see it."""

    pod_id: str
    host: str
    port: int
    draining: bool
    region: str
    zone: str


Membership = Mapping[str, tuple[Endpoint, ...]]  # pool name -> endpoints, sorted


def to_endpoint(pod: PodRecord) -> Endpoint:
    """A registered pod as an endpoint: draining unless its state takes new sessions."""
    return Endpoint(
        pod_id=pod.pod_id,
        host=pod.host,
        port=pod.port,
        draining=not pod.state.takes_sessions,
        region=pod.region,
        zone=pod.zone,
    )


def group_by_pool(pods: Iterable[PodRecord]) -> Membership:
    """The pods per pool, each pool's endpoints sorted (equal pods give equal membership)."""
    pools: dict[str, list[Endpoint]] = {}
    for pod in pods:
        pools.setdefault(pod.pool, []).append(to_endpoint(pod))
    return {pool: tuple(sorted(endpoints)) for pool, endpoints in pools.items()}
