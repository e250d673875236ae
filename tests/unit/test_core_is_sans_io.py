"""The pure cores are plain logic: no event loop, no network client, no wall clock — not
directly, and not through any module of the project they import (followed transitively)."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import modules, reachable

FORBIDDEN = {"asyncio", "aiohttp", "redis", "grpc", "socket", "time", "trio", "anyio", "uvloop"}


def _pure_modules() -> list[str]:
    return [name for name, _ in modules() if name.split(".")[:2] == ["sidecar", "core"]]


def _reaches_io(start: list[str], root: Path | None = None) -> list[str]:
    found = reachable(start) if root is None else reachable(start, root)
    return sorted(
        f"{module} (imported by {importer})"
        for module, importer in found.items()
        if module.split(".")[0] in FORBIDDEN
    )


def test_no_core_module_reaches_an_event_loop_a_network_client_or_the_clock() -> None:
    pure = _pure_modules()
    assert len(pure) >= 8
    assert _reaches_io(pure) == []


def test_the_check_follows_imports_through_other_modules(tmp_path: Path) -> None:
    (tmp_path / "sidecar" / "core").mkdir(parents=True)
    (tmp_path / "wsfleet").mkdir()
    (tmp_path / "sidecar" / "core" / "__init__.py").write_text("from . import rules\n")
    (tmp_path / "sidecar" / "core" / "rules.py").write_text("from wsfleet import clock\n")
    (tmp_path / "wsfleet" / "__init__.py").touch()
    (tmp_path / "wsfleet" / "clock.py").write_text("import time\n")
    assert _reaches_io(["sidecar.core"], tmp_path) == ["time (imported by wsfleet.clock)"]
