"""wsfleet: scale WebSockets behind real Envoy proxies.

This package is the base every process imports: typed settings, the registry, tokens,
errors, logging, the bridge API, the fleet CA. Above it, the two apps (``xds_server`` and
``sidecar``) import only the base, never each other; on top, :mod:`wsfleet.ops` (the CLI,
the launcher, operations, the demo backend, chaos, capacity) may import all of them.
"""

__version__ = "0.1.0"
