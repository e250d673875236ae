"""The tools: the ``wsfleet`` CLI (``python -m wsfleet_tools``), the local-fleet launcher,
fleet operations (drain, disconnect, rollout), the demo backend, chaos tools and the
capacity model.

They sit on the top floor with ``benchmarks`` and ``examples``: they may import the base
(``wsfleet``), the apps (``sidecar``, ``xds_server``, ``server_api``) and the client SDK;
nothing below imports them (``tests/unit/test_layers.py``).
"""
