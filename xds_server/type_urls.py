"""The xDS resource type URLs, named once."""

from typing import Final

LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

ALL: Final = (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)
# Types whose SotW subscription with no names means "everything" (wildcard).
WILDCARD_TYPES: Final = frozenset({LISTENER, CLUSTER})

SHORT_NAMES: Final = {
    LISTENER: "lds",
    ROUTE: "rds",
    CLUSTER: "cds",
    ENDPOINT: "eds",
    SECRET: "sds",
}
