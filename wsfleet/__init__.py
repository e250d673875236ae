"""wsfleet: scale WebSockets behind real Envoy proxies.

This package is the base every process imports: typed settings, the registry and the
other stores, tokens, errors, logging, the bridge API, the fleet CA. Above it, the apps
(``xds_server``, ``sidecar``, ``server_api``) import only the base, never each other; on
top, the tools (:mod:`wsfleet_tools`, ``benchmarks``, ``examples``) may import all of them.
"""

__version__ = "0.1.0"
