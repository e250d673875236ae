"""The project's imports as a graph, read from the source (no module is imported).

``tests/unit/test_layers.py`` checks its direction and ``test_core_is_sans_io.py`` what
the pure cores reach; both also run these functions on small planted trees, so a rule
that stopped seeing imports would fail too.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every package of the project, by where its sources live.
PACKAGE_DIRS = {
    "wsfleet": Path("wsfleet"),
    "sidecar": Path("sidecar"),
    "xds_server": Path("xds_server"),
    "server_api": Path("server_api"),
    "wsfleet_tools": Path("wsfleet_tools"),
    "benchmarks": Path("benchmarks"),
    "examples": Path("examples"),
    "wsfleet_client": Path("sdk/python/wsfleet_client"),
}

# The floors, bottom up. A package may import its own floor's packages and those below.
# The apps never import each other; the client SDK is a distribution of its own and
# imports nothing of the rest.
LAYER_OF = {
    "wsfleet_client": "sdk",
    "wsfleet": "base",
    "sidecar": "sidecar",
    "xds_server": "xds_server",
    "server_api": "server_api",
    "wsfleet_tools": "tools",
    "benchmarks": "tools",
    "examples": "tools",
}
ALLOWED = {
    "sdk": {"sdk"},
    "base": {"base"},
    "sidecar": {"base", "sidecar"},
    "xds_server": {"base", "xds_server"},
    "server_api": {"base", "server_api"},
    "tools": {"sdk", "base", "sidecar", "xds_server", "server_api", "tools"},
}


def layer(module: str) -> str | None:
    """The floor a module is on; None for what is not the project's (stdlib, PyPI, tests)."""
    return LAYER_OF.get(module.split(".")[0])


def modules(
    root: Path = ROOT, packages: Iterable[str] = PACKAGE_DIRS
) -> Iterator[tuple[str, Path]]:
    """Every project module under ``root``, as (dotted name, path); generated code aside."""
    for package in packages:
        folder = root / PACKAGE_DIRS[package]
        for path in sorted(folder.rglob("*.py")):
            if "_pb2" in path.name:
                continue
            parts = (package, *path.relative_to(folder).with_suffix("").parts)
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(name: str, path: Path) -> set[str]:
    """Every module ``path`` imports (absolute or relative, at any depth: in functions and
    under ``TYPE_CHECKING`` too), as dotted names; ``from a import b`` also names ``a.b``."""
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


def wrong_way_imports(root: Path = ROOT) -> list[str]:
    """Imports that run up a floor or across between apps, as readable lines."""
    wrong = []
    for name, path in modules(root):
        source = layer(name)
        assert source is not None
        for target in sorted(imports(name, path)):
            if target.split(".")[0] == "tests":
                wrong.append(f"{name} imports {target} (the tests)")
                continue
            target_layer = layer(target)
            if target_layer is not None and target_layer not in ALLOWED[source]:
                wrong.append(f"{name} ({source}) imports {target} ({target_layer})")
    return wrong


def reachable(start: Iterable[str], root: Path = ROOT) -> dict[str, str]:
    """Every module reached from ``start`` by following project imports transitively, with
    the project module that first imported it: ``{module: importer}``. Modules outside
    the project (stdlib, PyPI) are reported but not followed."""
    known = dict(modules(root))
    seen: dict[str, str] = {}
    todo = [name for name in start if name in known]
    while todo:
        name = todo.pop()
        for target in sorted(imports(name, known[name])):
            if target in seen or target == name:
                continue
            seen[target] = name
            if target in known:
                todo.append(target)
    return seen


def circles(root: Path = ROOT) -> list[str]:
    """Modules that import each other in a circle (a package's ``__init__`` importing its
    own modules is no circle worth naming)."""
    known = dict(modules(root))
    graph = {
        name: {target for target in imports(name, path) if target in known and target != name}
        for name, path in known.items()
    }
    found: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                found.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return [cycle for cycle in found if not _through_own_init(cycle)]


def _through_own_init(cycle: str) -> bool:
    steps = cycle.split(" -> ")
    return any(
        later.startswith(f"{earlier}.") or earlier.startswith(f"{later}.")
        for earlier, later in itertools.pairwise(steps)
    )
