"""``python -m benchmarks scale`` at smoke size (300 then 600 connections through 2 Envoys
and 2 gateways): every handshake succeeds, the connections are spread evenly over the L7
Envoys' own listeners (not the L4 tier), and every figure of the report is there."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import main as benchmarks_main

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 90


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_scale_smoke_holds_every_connection_through_both_envoys(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "scale", "--smoke", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert (tmp_path / "scale.svg").read_text().lstrip().startswith("<?xml")
    assert "handshakes ok %" in done.stdout  # the readable table follows the JSON
    steps = report["steps"]
    assert [step["connections"] for step in steps] == [300, 600]
    for step in steps:
        handshakes, traffic = step["handshakes"], step["traffic"]
        assert handshakes["success_pct"] == 100.0, handshakes["errors"]
        assert handshakes["errors"] == {}
        assert step["held"] == step["connections"] == traffic["still_open"]
        # straight to each L7 Envoy's listener, evenly: the L4 tier holds nothing
        assert step["held_per_envoy"] == {"envoy": step["held"] // 2, "envoy-2": step["held"] // 2}
        assert all(_number(handshakes[k]) for k in ("handshakes_per_s", "connect_s"))
        assert traffic["echo_received"] == traffic["echo_sent"] > 0
        assert traffic["pings_lost"] == 0
        for figure in ("echo_ms", "ping_ms"):
            assert traffic[figure]["n"] > 0
            assert 0 < traffic[figure]["p50"] <= traffic[figure]["p99"]
        assert _number(traffic["messages_per_s"])
        # the CPU behind the figures: the fleet's by kind, the clients', the whole machine's
        assert traffic["fleet_cores"]["sidecar"] > 0 and traffic["fleet_cores"]["envoy"] > 0
        assert traffic["fleet_cores"]["fleet"] >= traffic["fleet_cores"]["sidecar"]
        assert traffic["client_cores"] > 0 and 0 < traffic["machine_busy"] <= 1
        # the gateways' collector passes meanwhile, read from their /metrics
        collector = traffic["collector"]
        assert set(collector) == {"passes", "over_10_ms", "over_50_ms"}
        assert collector["passes"] >= collector["over_10_ms"] >= collector["over_50_ms"] >= 0
        assert _number(step["holding_cores"]["fleet"])
        for phase in ("idle", "after_traffic"):
            per_kind = step[f"kb_per_connection_{phase}"]
            assert {"envoy", "sidecar", "redis", "fleet", "l4"} <= set(per_kind)
            assert all(_number(per_kind[kind]) for kind in ("envoy", "sidecar", "fleet"))
            assert per_kind["envoy"] > 0 and per_kind["sidecar"] > 0
        # each L7 Envoy holds 2 files per connection (downstream + upstream), the L4 none
        envoy_fds = [step["fds"]["envoy"], step["fds"]["envoy-2"]]
        assert all(n >= step["held"] for n in envoy_fds), step["fds"]
        assert step["fds"]["l4"] < 100
    # each step's memory per connection against the first step's (its peer)
    assert steps[0]["kb_vs_first_idle"]["fleet"] == 1.0
    assert _number(steps[1]["kb_vs_first_idle"]["fleet"])
    assert report["options"]["heartbeat_interval_s"] > 0


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--steps", "50000", "--envoys", "2"], "use --envoys 6 or more"),
        (["--steps", "50000", "--sidecars", "2"], "use --sidecars 4 or more"),
        (["--steps", "20000", "--per-client", "19500"], "--per-client 19,500: at most 19,000"),
        (["--steps", "25000,10000"], "counts must be positive and increasing"),
        (
            ["--steps", "400000", "--envoys", "60", "--sidecars", "40", "--per-client", "100"],
            "more than 250",
        ),
    ],
)
def test_scale_refuses_a_run_past_a_process_file_limit_or_the_source_addresses(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything starts: exit 2 with the reason (no fleet, no client)."""
    with pytest.raises(SystemExit) as exited:
        benchmarks_main(["scale", *argv])
    assert exited.value.code == 2
    assert reason in capsys.readouterr().err
