"""``sidecar.core`` is plain logic: no event loop, no network client, no wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

import sidecar.core

CORE = Path(sidecar.core.__file__).parent
FORBIDDEN_MODULES = {"asyncio", "aiohttp", "redis", "grpc", "socket", "time", "trio", "anyio"}


def _imported_modules(source: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    return modules


def test_no_core_module_imports_an_event_loop_a_network_client_or_the_clock() -> None:
    sources = sorted(CORE.glob("*.py"))
    assert len(sources) >= 6
    for source in sources:
        assert not _imported_modules(source) & FORBIDDEN_MODULES, source.name
