"""How large a message may cross the bridge between gateways and backends.

gRPC refuses a message over 4 MiB by default, on the receiving side, by ending the whole
stream: one client message that large would take down the backend link of every session
on that gateway. So both ends of the bridge set their limit from one bound here, and a
gateway cannot be set to take client messages that would not fit: a batch carries at
most 1 MiB of messages, or one larger message alone, plus the events' own fields.
"""

from __future__ import annotations

import argparse

MAX_CLIENT_MESSAGE_BYTES = 32 << 20  # the most --max-message-bytes may be
BRIDGE_MESSAGE_BYTES = 2 * MAX_CLIENT_MESSAGE_BYTES  # one gRPC message of the bridge
GRPC_OPTIONS = (
    ("grpc.max_receive_message_length", BRIDGE_MESSAGE_BYTES),
    ("grpc.max_send_message_length", BRIDGE_MESSAGE_BYTES),
)


def client_message_size(text: str) -> int:
    """A ``--max-message-bytes`` value: 1 byte to :data:`MAX_CLIENT_MESSAGE_BYTES`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_CLIENT_MESSAGE_BYTES:
        raise argparse.ArgumentTypeError(
            f"{value} is not between 1 and {MAX_CLIENT_MESSAGE_BYTES} bytes (32 MiB: what one "
            "message of the bridge to the backends carries)"
        )
    return value
