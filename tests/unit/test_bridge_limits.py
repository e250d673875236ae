"""A gateway cannot be set to take client messages the bridge to its backends cannot
carry; both ends of the bridge allow one message of that size and a batch beside it."""

from __future__ import annotations

import argparse

import pytest

from sidecar.backend_bridge import MAX_BATCH_BYTES
from wsfleet.bridge_limits import (
    BRIDGE_MESSAGE_BYTES,
    GRPC_OPTIONS,
    MAX_CLIENT_MESSAGE_BYTES,
    client_message_size,
)
from wsfleet.settings import SidecarSettings


def test_message_sizes_up_to_the_bound_are_taken_and_beyond_refused_with_the_reason() -> None:
    assert client_message_size("1") == 1
    assert client_message_size(str(MAX_CLIENT_MESSAGE_BYTES)) == MAX_CLIENT_MESSAGE_BYTES
    for bad in ("0", str(MAX_CLIENT_MESSAGE_BYTES + 1), "lots"):
        with pytest.raises(argparse.ArgumentTypeError, match="not"):
            client_message_size(bad)


def test_the_largest_client_message_fits_the_bridge_with_room_for_its_fields() -> None:
    assert MAX_CLIENT_MESSAGE_BYTES + MAX_BATCH_BYTES < BRIDGE_MESSAGE_BYTES
    assert dict(GRPC_OPTIONS) == {
        "grpc.max_receive_message_length": BRIDGE_MESSAGE_BYTES,
        "grpc.max_send_message_length": BRIDGE_MESSAGE_BYTES,
    }
    default = SidecarSettings(redis_url="redis://127.0.0.1:1/0", backends="127.0.0.1:1")
    assert default.max_message_bytes <= MAX_CLIENT_MESSAGE_BYTES
