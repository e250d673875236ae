"""The tools: the ``wsfleet`` CLI (``python -m wsfleet_tools``), the local-fleet launcher,
fleet operations (drain, disconnect, rollout), the demo backend, chaos tools and the
capacity model.

They sit on the top floor with ``benchmarks`` and ``examples``: they may import the base
(``wsfleet``), the apps (``sidecar``, ``xds_server``, ``server_api``) and the client SDK;
nothing below imports them (``tests/unit/test_layers.py``).
"""

import os

# These processes use gRPC and start child processes. gRPC's fork handlers (on by default
# since grpcio 1.81) restart its poller in the forked child, which meets the epoll
# descriptor subprocess closed before exec and crashes the child before it runs
# (grpc/grpc#43055: "epoll_wait error: Bad file descriptor"). The children exec at once
# and need none of it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
