"""Every benchmark runs at smoke size, as a user runs it (``python -m benchmarks NAME
--smoke``), so that none can rot: it must exit 0 within its bound and report every figure
it is meant to, as a number. A ratio (or a rate per CPU-second) may be n/a (null) only
where the rule of benchmarks/report.py says so: nothing measurable to divide by. Results go
to a temporary directory, never over benchmarks/results/.

The smokes are spread over three files so that the test workers (whole files to a worker)
share them: this one (load, idle connections, xDS push, Redis, the command line), _faults
(benchmarks that kill or degrade the fleet) and _envoy (Envoy's memory, its chaos, Autobahn);
the helpers below serve all three."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.load.compare import LABELS
from benchmarks.load.report import RATIO_FIGURES
from benchmarks.report import MIN_CPU_S, ratio

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 150  # one smoke run (each takes seconds to tens of seconds)
CAN_PIN = {0, 1} <= os.sched_getaffinity(0)


def run_benchmark(name: str, output_dir: Path, *extra: str) -> dict[str, Any]:
    """``python -m benchmarks NAME --smoke --output-dir DIR``: its JSON result."""
    argv = [sys.executable, "-m", "benchmarks", name, "--smoke", "--output-dir", str(output_dir)]
    done = subprocess.run(
        [*argv, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr[-3000:]}"
    [result] = output_dir.glob("*.json")
    figures: dict[str, Any] = json.loads(result.read_text())
    assert "(saved to" in done.stdout
    return figures


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def dig(figures: dict[str, Any], path: str) -> Any:
    value: Any = figures
    for key in path.split("."):
        assert isinstance(value, dict) and key in value, f"no {path!r} (missing {key!r})"
        value = value[key]
    return value


def assert_numbers(figures: dict[str, Any], *paths: str) -> None:
    for path in paths:
        value = dig(figures, path)
        assert is_number(value), f"{path} = {value!r}, not a number"


def assert_per_cpu(rate: Any, cpu_s: Any, what: str) -> None:
    """A rate per CPU-second: a number, or n/a only when the CPU spent was unmeasurable."""
    assert is_number(cpu_s), f"{what}: CPU seconds {cpu_s!r}"
    if rate is None:
        assert cpu_s < MIN_CPU_S, f"{what} is n/a although {cpu_s} CPU-s were measured"
    else:
        assert is_number(rate) and rate >= 0, f"{what} = {rate!r}"


def assert_ratio(value: Any, numerator: Any, denominator: Any, tiny: float, what: str) -> None:
    """A ratio is numerator / denominator, or null exactly when the rule says n/a."""
    expected = ratio(numerator, denominator, tiny)
    if expected is None:
        assert value is None, f"{what} = {value!r}; expected n/a ({numerator} / {denominator})"
    else:
        assert is_number(value) and math.isclose(value, expected, rel_tol=1e-9), (
            f"{what} = {value!r}, expected {expected}"
        )
        assert value < 1e4, f"{what} = {value}: absurd"


def test_load_reports_wsfleet_raw_and_v1_beside_envoy_bare_and_bare(tmp_path: Path) -> None:
    extra = ("--pin",) if CAN_PIN else ()
    figures = run_benchmark("load", tmp_path, "--client", "picows", *extra)
    rows = {row["target"]: row for row in figures["results"]}
    assert list(rows) == ["wsfleet raw", "wsfleet v1", "envoy+bare", "bare"]
    assert rows["wsfleet raw"]["protocol"] == "raw" and rows["wsfleet v1"]["protocol"] == "v1"
    requested = figures["options"]["connections"]
    for name, row in rows.items():
        assert row["connections"] == requested, (name, row["surge"]["errors"])
        assert_numbers(
            row,
            "surge.success",
            "surge.handshakes_per_s",
            "surge.latency_s.p50",
            "surge.latency_s.p99",
            "sustained.kb_per_connection_total",
            "echo_rtt_s.p50",
            "echo_rtt_s.p99",
            "throughput.messages_per_s",
            "throughput.server_cpu_s",
            "fanout.deliveries_per_s",
            "fanout.server_cpu_s",
            "keepalive.ping_rtt_s.p50",
            "keepalive.ping_rtt_s.p99",
            "keepalive.echo_rtt_s.p50",
            "keepalive.echo_per_s",
            "keepalive.server_cores_busy",
        )
        assert row["surge"]["success"] == 1.0, (name, row["surge"]["errors"])
        assert row["throughput"]["messages"] == requested * figures["options"]["messages"]
        assert row["fanout"]["delivered"] == row["fanout"]["expected"], name
        assert row["keepalive"]["held"] == figures["options"]["keepalive_held"], name
        assert row["keepalive"]["pings_lost"] == 0, name
        assert row["keepalive"]["echo_received"] == row["keepalive"]["echo_sent"] > 0, name
        assert "ping" in row["keepalive"]["ping_probe"]
        assert_per_cpu(
            row["throughput"]["messages_per_cpu_s"],
            row["throughput"]["server_cpu_s"],
            f"{name} messages per CPU-s",
        )
        assert_per_cpu(
            row["fanout"]["deliveries_per_cpu_s"],
            row["fanout"]["server_cpu_s"],
            f"{name} fan-out per CPU-s",
        )
    # wsfleet does enough work at smoke size for its own per-CPU figures
    for name in ("wsfleet raw", "wsfleet v1"):
        assert is_number(rows[name]["throughput"]["messages_per_cpu_s"]), name

    assert set(figures["ratios"]) == {"wsfleet raw", "wsfleet v1"}
    for ours, peers in figures["ratios"].items():
        assert set(peers) == {"envoy+bare", "bare"}
        for peer, by_figure in peers.items():
            assert set(by_figure) == set(RATIO_FIGURES)
            for figure, (path, tiny) in RATIO_FIGURES.items():
                numerator = dig(rows[ours], ".".join(path))
                denominator = dig(rows[peer], ".".join(path))
                assert_ratio(
                    by_figure[figure], numerator, denominator, tiny, f"{ours}/{peer} {figure}"
                )
            # the figures that are always measurable at smoke size are never n/a
            for figure in ("kb_per_connection", "handshakes_per_s", "echo_rtt_p99"):
                assert is_number(by_figure[figure]), (ours, peer, figure)

    assert figures["pinned"] is CAN_PIN
    if CAN_PIN:
        assert figures["cores"] == {"load_generators": [0], "servers": [1]}
        for name, row in rows.items():
            assert set(map(tuple, row["affinity"]["servers"].values())) == {(1,)}, name
            assert set(map(tuple, row["affinity"]["load_generators"])) == {(0,)}, name
        assert set(rows["wsfleet v1"]["affinity"]["servers"]) >= {
            "envoy",
            "sidecar",
            "backend",
            "redis",
            "xds",
        }
    assert "sidecar_kb_per_connection" in figures["measured"]
    assert (tmp_path / "load-rtt.png").exists()
    check_outside_client(figures, rows)


def check_outside_client(figures: dict[str, Any], rows: dict[str, Any]) -> None:
    """--client picows: every target measured again by the outside client, on the clients'
    core, with the same request; both clients side by side with which side limited each."""
    requested = figures["options"]["connections"]
    echo_connections = min(figures["options"]["outside_echo_connections"], requested)
    echo_total = echo_connections * figures["options"]["outside_echo_messages"]
    for name, row in rows.items():
        outside = row["outside"]
        assert outside["surge"]["success"] == 1.0, (name, outside["surge"]["errors"])
        assert outside["echo"]["received"] == outside["echo"]["sent"] == echo_total, name
        assert_numbers(
            outside,
            "surge.handshakes_per_s",
            "surge.latency_s.p99",
            "surge.client_cores_busy",
            "surge.server_cores_busy",
            "surge.server_cpu_ms_per_handshake",
            "echo.messages_per_s",
            "echo.rtt_s.p99",
        )
        if CAN_PIN:
            assert outside["affinity"] == [0], name
    # both clients' upgrade requests were read; the token makes each a few hundred bytes
    assert set(figures["request_bytes"]) == {"loadgen", "picows"}
    assert all(200 < size < 4096 for size in figures["request_bytes"].values())
    compared = figures["clients_compared"]
    assert set(compared) == set(rows)
    for name, both in compared.items():
        for client in ("loadgen", "picows"):
            assert both[client]["bound"] in LABELS, (name, client)
            assert both[client]["request_bytes"] == figures["request_bytes"][client]
        assert both["picows"]["in_flight"] == figures["options"]["outside_in_flight"]
        assert (
            both["picows"]["handshakes_per_s"] == rows[name]["outside"]["surge"]["handshakes_per_s"]
        )
        assert_ratio(
            both["picows"]["ratio_to_baseline"],
            rows[name]["outside"]["surge"]["handshakes_per_s"],
            rows["envoy+bare"]["outside"]["surge"]["handshakes_per_s"],
            1e-9,
            f"{name} picows / envoy+bare",
        )
    check_rounds(figures)


def check_rounds(figures: dict[str, Any]) -> None:
    """--outside-rounds (1 at smoke size; the rotation and the medians are unit-tested):
    the three targets measured again, together; each ratio divides figures of the same
    round."""
    interleaved = figures["outside_rounds"]
    rounds = figures["options"]["outside_rounds"]
    assert interleaved["rounds"] == rounds == 1
    runs = interleaved["results"]
    assert set(runs) == {"wsfleet raw", "wsfleet v1", "envoy+bare"}
    requested = figures["options"]["connections"]
    for name, results in runs.items():
        assert len(results) == rounds, name
        for result in results:
            assert result["surge"]["requested"] == requested, name
            assert result["surge"]["success"] == 1.0, (name, result["surge"]["errors"])
            assert result["echo"]["received"] == result["echo"]["sent"] > 0, name
    for name in ("wsfleet raw", "wsfleet v1"):
        per_round = interleaved["ratios"][name]["handshakes_per_s"]["rounds"]
        for index in range(rounds):
            assert_ratio(
                per_round[index],
                runs[name][index]["surge"]["handshakes_per_s"],
                runs["envoy+bare"][index]["surge"]["handshakes_per_s"],
                1e-9,
                f"{name} round {index}",
            )


def test_idle_connections_steps_and_ratios(tmp_path: Path) -> None:
    figures = run_benchmark("idle-connections", tmp_path)
    results = figures["results"]
    assert set(results) == {"sidecar", "bare"}
    for kind, result in results.items():
        assert [s["held"] for s in result["steps"]] == [40, 80], kind
        for step in result["steps"]:
            assert_numbers(
                step, "kb_per_connection", "handshakes_per_s", "handshake_latency_s.p99", "rss_mb"
            )
            assert not step["errors"], (kind, step["errors"])
        assert_numbers(result, "base_rss_mb", "ping_rtt_s.p50", "ping_rtt_s.p99", "server_cpu_s")
        assert result["pings_lost"] == 0
    sidecar, bare = results["sidecar"], results["bare"]
    ratios = figures["ratios"]
    for ours, theirs in zip(sidecar["steps"], bare["steps"], strict=True):
        key = f"kb_per_connection_at_{ours['target']}"
        assert_ratio(ratios[key], ours["kb_per_connection"], theirs["kb_per_connection"], 0.01, key)
    assert is_number(ratios["handshakes_per_s_at_first_step"])
    assert is_number(ratios["ping_rtt_p99"])


def test_xds_push_reaches_every_simulated_envoy(tmp_path: Path) -> None:
    figures = run_benchmark("xds-push", tmp_path)
    scenarios = figures["scenarios"]
    assert [s["protocol"] for s in scenarios] == ["sotw", "delta"]
    for scenario in scenarios:
        assert scenario["changes"] == 2
        assert_numbers(
            scenario,
            "initial_sync_s",
            "change_to_first_client_s.p50",
            "change_to_all_clients_s.p50",
            "change_to_all_clients_s.max",
            "server_cpu_per_push_s.mean",
            "server_rss_mb",
            "zone_loss.death_to_first_client_s",
            "zone_loss.death_to_all_clients_s",
        )
        assert scenario["change_to_all_clients_s"]["n"] == 2
        loss = scenario["zone_loss"]
        assert (loss["zones"], loss["pods_lost"]) == (2, 10)  # half of the 20 pods
        # dead pods leave only once their registration has expired: never before the TTL
        assert loss["death_to_first_client_s"] >= loss["registration_ttl_s"]


def test_redis_round_trips_reports_both_costs(tmp_path: Path) -> None:
    figures = run_benchmark("redis-round-trips", tmp_path)
    assert set(figures["per_pipeline_us"]) == {"1", "10", "100", "1000"}
    assert_numbers(figures, "measured.redis_round_trip_us", "measured.redis_touch_call_us")
    # a pipeline of 1,000 calls costs Redis more than one of a single call
    assert figures["per_pipeline_us"]["1000"] > figures["per_pipeline_us"]["1"]


def test_bridge_writes_compares_grpc_with_a_plain_stream(tmp_path: Path) -> None:
    figures = run_benchmark("bridge-writes", tmp_path)
    measured = figures["rates"]["100"]
    for transport in ("grpc", "stream"):
        one = measured[transport]
        assert one["echoed"] == one["written"] == 200  # 100 writes/s for the smoke's 2 s
        assert_numbers(
            figures, f"rates.100.{transport}.writer_us_per_write", f"rates.100.{transport}.cpu_s"
        )
        assert one["writer_us_per_write"] > 0
    assert measured["writer_ratio"] == pytest.approx(
        measured["grpc"]["writer_us_per_write"] / measured["stream"]["writer_us_per_write"]
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["load", "--connections", "0"], "not a positive whole number"),
        (["load", "--clients", "5", "--connections", "3"], "more than --connections"),
        (["heartbeat-sweep", "--settings", "ten/20"], "expected INTERVAL/TIMEOUT"),
        (["xds-push", "--changes", "two"], "not a whole number"),
        (["bridge-writes", "--rates", "50000"], "at most 20000 writes a second"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(argv: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_benchmark_stops_every_process_it_started(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # a long settle keeps it running with its Redis and xDS server up
    benchmark = subprocess.Popen(
        [
            *(sys.executable, "-m", "benchmarks", "xds-push", "--smoke"),
            *("--settle", "60", "--output-dir", str(tmp_path)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        parent = psutil.Process(benchmark.pid)
        deadline = time.monotonic() + 60
        children: list[psutil.Process] = []
        while time.monotonic() < deadline:  # until Redis and the xDS server both run
            children = parent.children(recursive=True)
            names = " ".join(" ".join(child.cmdline()) for child in children)
            if "redis-server" in names and " xds " in names:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the benchmark did not start its Redis and xDS server in 60 s")
        benchmark.send_signal(signum)
        _, stderr = benchmark.communicate(timeout=60)
    finally:
        if benchmark.poll() is None:
            benchmark.kill()
            benchmark.wait()
    assert benchmark.returncode == 128 + signum, stderr
    assert "stopping every process this benchmark started" in stderr
    for child in children:  # gone, and reaped by the benchmark (a zombie would be "running")
        assert not child.is_running(), child
    assert not list(tmp_path.glob("*.json"))
