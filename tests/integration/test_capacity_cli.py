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
    printed = json.loads(ok.stdout)
    assert printed["pods"] > 0
    # the default plan chooses a batch spacing that fits: shards to carry it, never 0
    assert printed["redis_shards"] > 0 and printed["redis_round_trip_share"] <= 0.25
    assert printed["redis_batch_spacing_s"] > printed["redis_batch_spacing_asked_s"]
    assert printed["inputs"]["sidecar_handshakes_per_s"]["date"] == "2026-12-05"
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
