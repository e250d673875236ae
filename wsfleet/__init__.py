"""wsfleet: scale WebSockets behind real Envoy proxies.

This package is the small shared core: CLI, typed settings, registry backends,
logging and the local-fleet launcher. ``xds_server`` and ``sidecar`` import it;
they never import each other.
"""

__version__ = "0.1.0"
