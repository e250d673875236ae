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
    assert options["grpc.http2.min_ping_interval_without_data_ms"] < int(interval[1]) * 1000


def test_every_server_option_is_one_grpc_knows() -> None:
    """gRPC ignores an option it does not know (a misspelt ping option once left the
    GOAWAYs in place): each name must appear in gRPC's own library."""
    import grpc._cython.cygrpc as cygrpc

    library = Path(cygrpc.__file__).read_bytes()
    for name, _ in GRPC_SERVER_OPTIONS:
        assert name.encode() in library, name
