"""Routing policies the tests write, built in one place: the smallest policy that serves
WebSocket clients (one listener, one route at ``/ws``, one pool ``gateways``), with what a
test changes about it named where it is used.

The text is what a person would write (flow style for nested values), so a test may still
edit a line of it with ``str.replace`` to make a policy one step wrong.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

EDGE_CERTIFICATE = "edge"  # the certificate a TLS policy names: files edge.crt and edge.key


def websocket_policy(
    port: int = 8080,
    *,
    tls: bool = False,
    listener: Mapping[str, object] | None = None,
    route: Mapping[str, object] | None = None,
    pool: Mapping[str, object] | None = None,
) -> str:
    """The smallest WebSocket policy on ``port``; with ``tls``, served with the certificate
    ``edge`` (``edge.crt``, ``edge.key`` beside the policy file). ``listener``, ``route``
    and ``pool`` add keys to those parts."""
    lines = []
    if tls:
        lines += [
            "certificates:",
            f"  - name: {EDGE_CERTIFICATE}",
            f"    cert_file: {EDGE_CERTIFICATE}.crt",
            f"    key_file: {EDGE_CERTIFICATE}.key",
        ]
    lines += ["listeners:", "  - name: public", f"    port: {port}"]
    if tls:
        lines.append(f"    tls: {{certificate: {EDGE_CERTIFICATE}}}")
    lines += ["    routes: [websocket]", *_keys(listener)]
    lines += ["routes:", "  - name: websocket", "    path_prefix: /ws", "    pool: gateways"]
    lines += [*_keys(route), "pools:", "  - name: gateways", *_keys(pool)]
    return "\n".join(lines) + "\n"


def _keys(values: Mapping[str, object] | None) -> list[str]:
    """``key: value`` lines of a list item's mapping, nested values in flow style."""
    return [f"    {key}: {_flow(value)}" for key, value in (values or {}).items()]


def _flow(value: object) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return text.removesuffix("\n...")  # a plain scalar's end-of-document marker
