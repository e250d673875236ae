"""Envoy's keepalive pings on its xDS connection must be welcome at the control plane."""

from __future__ import annotations

import re
from pathlib import Path

from xds_server.main import GRPC_SERVER_OPTIONS

BOOTSTRAP = Path(__file__).resolve().parents[2] / "envoy" / "bootstrap.yaml"


def test_the_server_accepts_pings_more_often_than_envoy_sends_them() -> None:
    """With gRPC's default (one ping per 5 minutes without data, GOAWAY at the third early
    one), Envoy's 15 s pings cost every Envoy its ADS stream about every 65 s."""
    interval = re.search(r"connection_keepalive: \{ interval: (\d+)s", BOOTSTRAP.read_text())
    assert interval is not None
    options = dict(GRPC_SERVER_OPTIONS)
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] < int(interval[1]) * 1000
