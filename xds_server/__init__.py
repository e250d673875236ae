"""wsfleet's xDS control plane: policy + membership in, Envoy config out over ADS.

Modules, one job each:

- :mod:`xds_server.policy` / :mod:`xds_server.policy_loader`: the operator's policy file;
- :mod:`xds_server.membership`: live gateway pods from the registry;
- :mod:`xds_server.builders`: policy + membership -> Envoy resources (plain dicts);
- :mod:`xds_server.snapshot`: versioned, immutable, serialized-once snapshots and their cache;
- :mod:`xds_server.sotw`: the State-of-the-World ADS protocol state machine (no I/O);
- :mod:`xds_server.ads_service`: gRPC glue between Envoy streams and the state machine;
- :mod:`xds_server.ledger`: what each connected Envoy has ACKed and NACKed;
- :mod:`xds_server.admin`: debug and metrics HTTP endpoints.
"""
