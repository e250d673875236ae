"""The browser SDK's logic under Node's own test runner (no browser, no npm packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SDK = Path(__file__).resolve().parents[2] / "sdk" / "js"


def test_the_javascript_sdk_unit_tests_pass_under_node() -> None:
    node = shutil.which("node")
    assert node, "node is missing: the JavaScript SDK's tooling needs Node.js 20"
    result = subprocess.run(
        [node, "--test", "test/"], cwd=SDK, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout


def test_the_javascript_sdk_parses_as_a_module() -> None:
    node = shutil.which("node")
    assert node
    result = subprocess.run(
        [node, "--check", "wsfleet.js"], cwd=SDK, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_export_of_the_module_is_typed_and_the_package_ships_both() -> None:
    import json
    import re

    exports = set(
        re.findall(
            r"^export (?:class|function|const) (\w+)", (SDK / "wsfleet.js").read_text(), re.M
        )
    )
    typed = set(
        re.findall(
            r"^export (?:class|function|const) (\w+)", (SDK / "wsfleet.d.ts").read_text(), re.M
        )
    )
    assert exports and exports == typed
    package = json.loads((SDK / "package.json").read_text())
    assert package["types"] == "wsfleet.d.ts"
    assert package["exports"]["."] == {"types": "./wsfleet.d.ts", "default": "./wsfleet.js"}
    assert {"wsfleet.js", "wsfleet.d.ts"} <= set(package["files"])
    assert all((SDK / name).exists() for name in package["files"])
    assert f"## {package['version']}" in (SDK / "CHANGELOG.md").read_text()
