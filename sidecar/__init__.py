"""wsfleet's gateway sidecar: where every client connection lives.

- :mod:`sidecar.auth`: token checks at the handshake;
- :mod:`sidecar.hashing`: consistent hashing of routing keys to backends;
- :mod:`sidecar.backend_bridge`: the multiplexed gRPC stream to each backend;
- :mod:`sidecar.websocket_transport`: the ``/ws`` handler (aiohttp glue);
- :mod:`sidecar.registration`: the pod's entry in the registry;
- :mod:`sidecar.app`: the HTTP applications; :mod:`sidecar.main`: lifecycle.
"""
