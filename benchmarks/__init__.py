"""wsfleet's measurements: speed and memory, printed as JSON and a readable table.

Run ``python -m benchmarks --help`` (or ``make bench ARGS=...``). Every wait has a
deadline, every load loop is bounded in count and in time, and every child process is
stopped on any way out. Results also go to ``benchmarks/results/`` (``--output-dir``
elsewhere; ``--smoke`` runs at CI size into a temporary directory).
"""

import os

# These processes use gRPC and start child processes. gRPC's fork handlers (on by default
# since grpcio 1.81) restart its poller in the forked child, which meets the epoll
# descriptor subprocess closed before exec and crashes the child before it runs
# (grpc/grpc#43055: "epoll_wait error: Bad file descriptor"). The children exec at once
# and need none of it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
