"""HTTP headers wsfleet's processes put on the wire (one definition each)."""

POD_HEADER = "x-wsfleet-pod"  # on every accepted handshake: which pod holds the connection
REFUSAL_HEADER = "x-wsfleet-refusal"  # on every refused handshake: "reason: message"
