"""Which node ids a client certificate proves: its name, or a pod of the Kubernetes
Deployment it names (the replicas of a zone share the zone's certificate)."""

from __future__ import annotations

import pytest

from wsfleet.fleet_ca import node_proven_by

ZONE = "envoy-zone-a"


@pytest.mark.parametrize(
    "node_id",
    [
        "envoy-zone-a",  # the very name (the local fleet's Envoys)
        "envoy-zone-a-7d9f8c6b5-x2k4q",  # a pod of Deployment envoy-zone-a
        "envoy-zone-a-5-abcde",  # a one-character hash
        "envoy-zone-a-7d9f8c6b5z-x2k4q",  # a ten-character hash
    ],
)
def test_the_certificates_name_and_its_deployments_pods_are_proven(node_id: str) -> None:
    assert node_proven_by(node_id, ZONE)


@pytest.mark.parametrize(
    "node_id",
    [
        "envoy-zone-b-7d9f8c6b5-x2k4q",  # another zone's pod
        "envoy-zone-ab-7d9f8c6b5-x2k4q",  # a longer name sharing the prefix
        "envoy-zone-a-x-7d9f8c6b5-x2k4q",  # an extra segment
        "envoy-zone-a-7d9f8c6b5-x2k4q-extra",
        "envoy-zone-a-7D9F8C6B5-X2K4Q",  # upper case
        "envoy-zone-a-",  # empty suffix
        "envoy-zone-a--x2k4q",  # empty hash
        "envoy-zone-a-7d9f8c6b5-",  # empty random part
        "envoy-zone-a-7d9f8c6b5-x2k4",  # 4 random characters
        "envoy-zone-a-7d9f8c6b5-x2k4qq",  # 6
        "envoy-zone-a-7d9f8c6b5z1-x2k4q",  # an 11-character hash
        "envoy-zone-a-7d9f8c6b5_x2k4q",
        "envoy-zone-a-7d9f8c6b5-x2k4q\n",
        "envoy-zone",  # a prefix of the name
        "x-envoy-zone-a-7d9f8c6b5-x2k4q",
        "",
    ],
)
def test_anything_else_is_refused(node_id: str) -> None:
    assert not node_proven_by(node_id, ZONE)


def test_a_certificate_without_a_name_proves_nothing() -> None:
    assert not node_proven_by("", "")
    assert not node_proven_by("-7d9f8c6b5-x2k4q", "")
