"""The Autobahn TestSuite's fuzzing-client cases against the fleet, through Envoy, beside a
bare aiohttp echo server on the same cases.

Three targets, one after the other: wsfleet at its defaults (one sidecar, the demo
backend echoing raw WebSocket messages), wsfleet under the conformance profile
(deploy/profiles/conformance.env) and the bare aiohttp echo (benchmarks/bare_echo.py).
The cases run with ``kosoku`` (Autobahn's own case files, natively). Per case group (the
case id's first number): how many cases were OK, NON-STRICT, INFORMATIONAL, FAILED (or
ERROR, UNIMPLEMENTED), the close codes the server sent, and how many cases ended with no
close frame from the server at all (a dropped connection: never acceptable).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import kosoku

from benchmarks.report import publish, table
from wsfleet.arg_types import positive_float
from wsfleet.readiness import wait_ready
from wsfleet.settings import SidecarSettings
from wsfleet.settings_flags import env_name, flag_name
from wsfleet_tools.launcher.children import Supervisor
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

PROFILE = Path(__file__).resolve().parent.parent / "deploy" / "profiles" / "conformance.env"
TARGETS = ("defaults", "conformance", "bare")
ALL_CASES = [f"{group}.*" for group in (1, 2, 3, 4, 5, 6, 7, 9, 10, 12, 13)]  # no 8, no 11
PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
OP_CLOSE = 8
START_TIMEOUT_S = 30.0


def profile_args(path: Path = PROFILE) -> tuple[str, ...]:
    """The ``WSFLEET_…=value`` lines of a profile file as ``wsfleet sidecar`` flags."""
    flags = {env_name(f): flag_name(f) for f in dataclasses.fields(SidecarSettings)}
    args: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or name not in flags:
            raise ValueError(f"{path}:{number}: not a sidecar setting: {line!r}")
        args += [flags[name], value]
    return tuple(args)


@dataclasses.dataclass(frozen=True)
class CaseOutcome:
    """One case as the tables count it."""

    case_id: str
    verdict: str  # OK, NON-STRICT, INFORMATIONAL, FAILED, ERROR, UNIMPLEMENTED
    close_verdict: str
    close_code: int | None  # what the server's close frame said (None: no code, or none)
    close_frame: bool  # whether the server sent a close frame at all
    reason: str | None
    duration_ms: int

    @property
    def passed(self) -> bool:
        return self.verdict in PASSING and self.close_verdict in PASSING

    @property
    def group(self) -> str:
        return self.case_id.split(".")[0]


def outcome(result: Any) -> CaseOutcome:
    """A kosoku ``CaseResult`` as a :class:`CaseOutcome`."""
    received = {int(str(opcode)): count for opcode, count in result.rx_frame_stats.items()}
    verdict = result.behavior.value
    close_verdict = result.behavior_close.value
    if verdict in PASSING and close_verdict not in PASSING:
        verdict = "FAILED"  # the exchange was right, its close was not: the case failed
    return CaseOutcome(
        result.case_id,
        verdict,
        close_verdict,
        result.remote_close_code,
        received.get(OP_CLOSE, 0) > 0 or result.remote_close_code is not None,
        result.remote_close_reason,
        int(result.duration),
    )


async def run_cases(
    url: str, cases: Sequence[str], exclude: Sequence[str], timeout_s: float
) -> list[CaseOutcome]:
    """Run the cases against ``url``; every case's outcome, in case order."""
    async with asyncio.timeout(timeout_s):
        try:
            results = await kosoku.run_fuzzingclient(url, list(cases), list(exclude) or None)
        except kosoku.FailureError as failure:  # some case failed: the results are there
            results = failure.results
    return [outcome(result) for result in results]


def summarize(outcomes: Sequence[CaseOutcome]) -> dict[str, dict[str, Any]]:
    """Per case group: counts by verdict, close codes, cases with no close frame, and the
    ids of the cases that did not pass."""
    groups: dict[str, dict[str, Any]] = {}
    for case in outcomes:
        group = groups.setdefault(
            case.group,
            {"cases": 0, "verdicts": collections.Counter(), "close_codes": collections.Counter()},
        )
        group["cases"] += 1
        group["verdicts"][case.verdict] += 1
        code = "none" if not case.close_frame else str(case.close_code or "empty")
        group["close_codes"][code] += 1
        if not case.passed:
            group.setdefault("not_passed", []).append(f"{case.case_id} ({code})")
    for group in groups.values():
        group["verdicts"] = dict(group["verdicts"])
        group["close_codes"] = dict(sorted(group["close_codes"].items()))
        group["no_close_frame"] = group["close_codes"].get("none", 0)
    return dict(sorted(groups.items(), key=lambda item: int(item[0])))


@asynccontextmanager
async def wsfleet_url(run_dir: Path, sidecar_args: tuple[str, ...]) -> AsyncIterator[str]:
    """A one-sidecar fleet (the demo backend echoes); its client URL with a token."""
    fleet = LocalFleet(
        FleetOptions(
            sidecars=1,
            port=free_port(),
            admin_port=free_port(),
            state_dir=run_dir / "state",
            api_instances=0,
            log_level="warning",
            sidecar_args=sidecar_args,
        )
    )
    await fleet.start()
    try:
        yield f"{fleet.client_url}?user=autobahn&access_token={fleet.token('autobahn')}"
    finally:
        await fleet.stop()


@asynccontextmanager
async def bare_url(run_dir: Path) -> AsyncIterator[str]:
    """The bare aiohttp echo server (benchmarks/bare_echo.py)."""
    supervisor = Supervisor(run_dir / "logs")
    try:
        ready = run_dir / "bare.ready.json"
        await supervisor.start(
            "bare", [sys.executable, "-m", "benchmarks.bare_echo", "--ready-file", str(ready)]
        )
        port = int((await wait_ready(ready, START_TIMEOUT_S))["port"])
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await supervisor.stop_all(10)


async def run_target(target: str, args: argparse.Namespace, run_dir: Path) -> list[CaseOutcome]:
    run_dir.mkdir(parents=True)
    if target == "bare":
        server = bare_url(run_dir)
    else:
        server = wsfleet_url(run_dir, profile_args() if target == "conformance" else ())
    async with server as url:
        return await run_cases(url, args.cases, args.exclude, args.max_seconds)


async def main(args: argparse.Namespace) -> None:
    figures: dict[str, Any] = {"cases": args.cases, "exclude": args.exclude, "targets": {}}
    sections = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-autobahn-") as tmp:
        for target in args.targets:
            outcomes = await run_target(target, args, Path(tmp) / target)
            groups = summarize(outcomes)
            figures["targets"][target] = {
                "cases": len(outcomes),
                "passed": sum(case.passed for case in outcomes),
                "no_close_frame": sum(not case.close_frame for case in outcomes),
                "groups": groups,
            }
            sections.append(_section(target, figures["targets"][target]))
    publish("autobahn", figures, "\n\n".join(sections), args.output_dir)


def _section(target: str, figures: dict[str, Any]) -> str:
    rows = []
    for name, group in figures["groups"].items():
        verdicts = group["verdicts"]
        other = group["cases"] - sum(verdicts.get(v, 0) for v in (*PASSING, "FAILED"))
        codes = ", ".join(f"{code}: {count}" for code, count in group["close_codes"].items())
        rows.append(
            (
                name,
                group["cases"],
                verdicts.get("OK", 0),
                verdicts.get("NON-STRICT", 0),
                verdicts.get("INFORMATIONAL", 0),
                verdicts.get("FAILED", 0),
                other,
                group["no_close_frame"],
                codes,
            )
        )
    header = ["group", "cases", "OK", "NON-STRICT", "INFO", "FAILED", "ERROR/other"]
    header += ["no close frame", "server close codes (cases)"]
    title = (
        f"{target}: {figures['passed']} of {figures['cases']} passed,"
        f" {figures['no_close_frame']} ended without a close frame"
    )
    return title + "\n" + table(rows, header)


SMOKE: dict[str, Any] = {
    "cases": ["1.1.1", "1.1.8", "2.1", "5.1", "7.1.1", "9.1.1"],
    "max_seconds": 120.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cases",
        nargs="+",
        default=ALL_CASES,
        help="case ids or globs (default: every case, 1.* to 13.*)",
    )
    parser.add_argument("--exclude", nargs="*", default=[], help="case ids or globs to skip")
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGETS,
        default=list(TARGETS),
        help="what to run the cases against, in this order",
    )
    parser.add_argument(
        "--max-seconds",
        type=positive_float,
        default=3600.0,
        help="a bound on each target's run of the cases",
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if not args.cases:
        return "--cases: at least one case"
    return None
