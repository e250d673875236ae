"""The browser SDK's logic under Node's own test runner (no browser, no npm packages)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
