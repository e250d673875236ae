"""``wsfleet capacity`` as a user runs it: a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_cli_prints_the_plan_and_refuses_missing_results(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "wsfleet_tools", "capacity", "--connections", "5000000", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["pods"] > 0
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "wsfleet_tools",
            "capacity",
            "--connections",
            "5",
            "--from",
            str(tmp_path / "x.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode != 0 and "no benchmark results" in missing.stderr
