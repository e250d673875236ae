"""Imports run one way: base (``wsfleet``) <- apps (``sidecar``, ``xds_server``) <- ops
(``wsfleet.ops``, the program's entry ``wsfleet.__main__``); the apps never import each
other, and no package's modules import each other in a circle. Every import counts,
including those inside functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("wsfleet", "sidecar", "xds_server")

# what each layer may import, of the project's own packages
ALLOWED = {
    "base": {"base"},
    "sidecar": {"base", "sidecar"},
    "xds_server": {"base", "xds_server"},
    "ops": {"base", "sidecar", "xds_server", "ops", "client"},
}


def layer(module: str) -> str | None:
    """The layer a module belongs to; None for what is not the project's (stdlib, PyPI)."""
    if module == "wsfleet.__main__" or module == "wsfleet.ops" or module.startswith("wsfleet.ops."):
        return "ops"
    top = module.split(".")[0]
    if top == "wsfleet":
        return "base"
    if top in ("sidecar", "xds_server"):
        return top
    if top == "wsfleet_client":
        return "client"
    return None


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "_pb2" in path.name:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports (absolute or relative), as dotted names."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return found


def test_every_import_points_down_or_sideways_within_its_layer() -> None:
    wrong = []
    for name, path in modules():
        source = layer(name)
        assert source is not None
        for target in imports(name, path):
            target_layer = layer(target)
            if target_layer is not None and target_layer not in ALLOWED[source]:
                wrong.append(f"{name} ({source}) imports {target} ({target_layer})")
    assert wrong == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    known = dict(modules())
    graph = {
        name: {target for target in imports(name, path) if target in known and target != name}
        for name, path in known.items()
    }
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own modules is no circle worth naming
    cycles = [c for c in cycles if not _through_own_init(c)]
    assert cycles == []


def _through_own_init(cycle: str) -> bool:
    steps = cycle.split(" -> ")
    return any(
        later.startswith(f"{earlier}.") or earlier.startswith(f"{later}.")
        for earlier, later in itertools.pairwise(steps)
    )


def test_the_rules_see_what_they_guard() -> None:
    """The checks above read real imports: a module known to import across is found."""
    names = dict(modules())
    assert "sidecar.main" in names and "wsfleet.ops.cli" in names
    assert any(t.startswith("wsfleet.") for t in imports("sidecar.main", names["sidecar.main"]))
    assert layer("wsfleet.ops.launcher.fleet") == "ops"
    assert layer("wsfleet.settings") == "base"
    assert layer("wsfleet.__main__") == "ops"
