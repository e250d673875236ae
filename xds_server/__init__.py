"""wsfleet's xDS control plane: policy + membership in, Envoy config out over ADS.

Modules, one job each. Pure (no event loop, network client or clock, not even through
an import: ``tests/unit/test_core_is_sans_io.py``):

- :mod:`xds_server.policy` / :mod:`xds_server.policy_loader`: the operator's policy file;
- :mod:`xds_server.membership`: gateway pods per pool, computed from pod records;
- :mod:`xds_server.builders`: policy + membership -> Envoy resources (plain dicts);
- :mod:`xds_server.snapshot`: versioned, immutable, serialized-once snapshots;
- :mod:`xds_server.sotw` / :mod:`xds_server.delta`: the ADS protocol state machines;
- :mod:`xds_server.ledger`: what each connected Envoy has ACKed and NACKed.

Their asyncio shells:

- :mod:`xds_server.membership_watcher`: follows the registry's live pods;
- :mod:`xds_server.snapshot_cache`: the snapshot per node group the streams wait on;
- :mod:`xds_server.ads_service`: gRPC glue between Envoy streams and the state machines;
- :mod:`xds_server.admin`: debug and metrics HTTP endpoints.
"""
