"""The operators' layer: the ``wsfleet`` CLI, the local-fleet launcher, fleet operations
(drain, disconnect, rollout), the demo backend, chaos tools and the capacity model.

It sits on top: it may import the base (``wsfleet``) and both apps (``sidecar``,
``xds_server``); nothing below imports it (``tests/unit/test_layers.py``).
"""
