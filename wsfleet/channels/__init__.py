"""Channels: names and namespaces, what travels on their topics, and the stores that keep
their history, offsets and presence (Redis and memory, one contract). The gateways and
the server API both build on this package; see docs/channels.md."""
