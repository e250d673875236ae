"""What a policy edit would change in Envoy, resource by resource (a dry run).

Both sides are built with the same builders the server uses and compared by
content version, so the answer is exactly what the server would push. A
change to a Listener is flagged: Envoy drains that listener's live
connections when it changes (docs/envoy-behaviours.md, 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xds_server import type_urls
from xds_server.builders import ANY_REGION, NodeGroup, build_resources
from xds_server.membership import Membership
from xds_server.policy_loader import PolicyBundle
from xds_server.snapshot import content_version

Versions = Mapping[str, Mapping[str, str]]  # short type -> name -> content version


@dataclass(frozen=True, slots=True, order=True)
class ResourceChange:
    type: str  # lds | rds | cds | eds | sds
    name: str
    change: str  # added | removed | changed

    @property
    def drains_connections(self) -> bool:
        return self.type == "lds" and self.change in ("changed", "removed")


def resource_versions(
    bundle: PolicyBundle, membership: Membership, group: NodeGroup = ANY_REGION
) -> dict[str, dict[str, str]]:
    """Content versions of every resource a bundle produces."""
    resources = build_resources(bundle.policy, membership, bundle.certificates, group)
    return {
        type_urls.SHORT_NAMES[url]: {name: content_version(spec) for name, spec in by_name.items()}
        for url, by_name in resources.items()
    }


def diff_versions(old: Versions, new: Versions) -> list[ResourceChange]:
    changes: list[ResourceChange] = []
    for short in ("lds", "rds", "cds", "eds", "sds"):
        before, after = old.get(short, {}), new.get(short, {})
        for name in sorted(set(before) | set(after)):
            if name not in before:
                changes.append(ResourceChange(short, name, "added"))
            elif name not in after:
                changes.append(ResourceChange(short, name, "removed"))
            elif before[name] != after[name]:
                changes.append(ResourceChange(short, name, "changed"))
    return changes


def render(changes: list[ResourceChange]) -> str:
    """One line per change, then a summary that says whether live connections would drop."""
    if not changes:
        return "no change: Envoy would receive nothing"
    width = max(len(change.name) for change in changes)
    lines = []
    for change in changes:
        note = (
            "  ! drains the live connections of this listener" if change.drains_connections else ""
        )
        lines.append(f"{change.type}  {change.name.ljust(width)}  {change.change}{note}")
    draining = sum(change.drains_connections for change in changes)
    summary = f"{len(changes)} change(s)"
    if draining:
        summary += f"; {draining} touch a listener and would drain its live connections"
    else:
        summary += "; no listener is touched: live connections stay up"
    return "\n".join([*lines, summary])
