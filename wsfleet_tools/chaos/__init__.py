"""Tools to break the fleet on purpose: a user-space fault proxy (loss, latency, jitter,
blackholing) for machines without ``netem``."""
