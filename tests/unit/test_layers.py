"""Imports run one way, and the folders say so: the client SDK (``wsfleet_client``) and the
base (``wsfleet``) at the bottom; the apps (``sidecar``, ``xds_server``, ``server_api``) on
the base only, never on each other; the tools (``wsfleet_tools``: the CLI, the launcher, the
demo backend; ``benchmarks``; ``examples``) on top. No package imports the tests, and no
modules import each other in a circle. Every import counts, including those inside
functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import ROOT, circles, imports, layer, modules, wrong_way_imports


def test_every_import_points_down_or_sideways_within_its_floor() -> None:
    assert wrong_way_imports() == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert circles() == []


def test_every_package_of_the_project_is_read() -> None:
    names = dict(modules())
    for package in ("wsfleet", "sidecar", "xds_server", "wsfleet_tools", "benchmarks"):
        assert package in names, package
    assert "wsfleet_client.client" in names
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk <= {name.split(".")[0] for name in names}, "a package the rules do not see"
    # and the imports they read are real: the sidecar imports the base
    assert any(t.startswith("wsfleet.") for t in imports("sidecar.main", names["sidecar.main"]))


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("wsfleet", "sidecar", "xds_server", "wsfleet_tools"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_a_planted_import_up_a_floor_is_caught(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {
            "wsfleet/settings.py": "import os\n",
            "wsfleet/stores.py": "def f():\n    from wsfleet_tools.cli import main\n",
            "sidecar/main.py": "from wsfleet import settings\n",
        },
    )
    assert wrong_way_imports(root) == [
        "wsfleet.stores (base) imports wsfleet_tools.cli (tools)",
        "wsfleet.stores (base) imports wsfleet_tools.cli.main (tools)",
    ]


def test_a_planted_import_across_apps_a_relative_one_and_one_of_the_tests_are_caught(
    tmp_path: Path,
) -> None:
    root = _plant(
        tmp_path,
        {
            "sidecar/core/__init__.py": "",
            "sidecar/core/rules.py": "from ...xds_server import ledger\n",
            "xds_server/ledger.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import tests.helpers\n",
        },
    )
    wrong = wrong_way_imports(root)
    assert "sidecar.core.rules (sidecar) imports xds_server (xds_server)" in wrong
    assert "xds_server.ledger imports tests.helpers (the tests)" in wrong


def test_a_planted_circle_is_caught(tmp_path: Path) -> None:
    root = _plant(
        tmp_path,
        {"wsfleet/a.py": "from wsfleet import b\n", "wsfleet/b.py": "import wsfleet.a\n"},
    )
    assert circles(root) == ["wsfleet.a -> wsfleet.b -> wsfleet.a"]


def test_floors_are_named_by_package() -> None:
    assert layer("wsfleet_tools.launcher.fleet") == "tools"
    assert layer("benchmarks.load") == "tools"
    assert layer("wsfleet.settings") == "base"
    assert layer("wsfleet_client") == "sdk"
    assert layer("asyncio") is None
