"""``load``'s main: start each target in turn, run every scenario against it, stop it;
then the ratios, the table and the plots (and with ``--client picows`` the two clients
side by side)."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar, cast

from benchmarks import processes
from benchmarks.load import compare, generators, report, rounds
from benchmarks.load.phases import measure
from benchmarks.load.scenarios import outside
from benchmarks.load.targets import ENVOY_DEFAULT_BUFFERS, Placement, start_target
from benchmarks.report import publish

OPTIONS = (
    "connections",
    "rate",
    "clients",
    "hold",
    "rtt_rate",
    "messages",
    "fanout",
    "keepalive_held",
    "keepalive_rate",
    "keepalive_seconds",
    "keepalive_ping_rate",
    "client",
    "outside_in_flight",
    "outside_echo_connections",
    "outside_echo_depth",
    "outside_echo_messages",
    "outside_rounds",
)
T = TypeVar("T")
Plan = list[tuple[str, Path | None, int, bool]]  # name, policy, Envoy workers, v1


def plan(args: argparse.Namespace, tmp: Path) -> Plan:
    variants: Plan = [("wsfleet raw", None, 1, False), ("wsfleet v1", None, 1, True)]
    if args.envoy_variants:
        defaults = tmp / "envoy-defaults.yaml"
        defaults.write_text(ENVOY_DEFAULT_BUFFERS)
        variants.append(("wsfleet v1/envoy-defaults", defaults, 1, True))
        variants.append(("wsfleet v1/2-workers", None, 2, True))
    return [*variants, ("envoy+bare", None, 1, False), ("bare", None, 1, False)]


async def main(args: argparse.Namespace) -> None:
    placement = Placement.from_args(args)
    if args.pin:
        processes.check_pinning()
    results = []
    request_bytes: dict[str, int] = {}
    with (
        processes.own_affinity(placement.clients),
        tempfile.TemporaryDirectory(prefix="wsfleet-load-") as tmp,
    ):
        for index, (name, policy, concurrency, v1) in enumerate(plan(args, Path(tmp))):
            target = await start_target(Path(tmp), name, policy, concurrency, v1, placement.servers)
            assert target.stop is not None
            try:
                results.append(await measure(target, args, placement, index))
            except BaseException:
                await target.stop()
                raise
            if args.client == "picows" and not request_bytes:
                # read while the target stops: nothing is measured meanwhile
                request_bytes = await _while(
                    target.stop(), outside.request_bytes(target.key_file, placement)
                )
            else:
                await target.stop()
        interleaved = await rounds.run(args, placement, Path(tmp)) if args.outside_rounds else None
    figures = _figures(args, placement, results, request_bytes)
    text = report.readable(results, figures["ratios"], args.pin)
    if "clients_compared" in figures:
        text += "\n\n" + compare.readable(figures["clients_compared"])
    if interleaved is not None:
        figures["outside_rounds"] = interleaved
        text += "\n\n" + rounds.readable(interleaved)
    paths = report.plots(results, args.output_dir)
    text += "\nplots: " + ", ".join(str(p) for p in paths)
    publish("load", figures, text, args.output_dir)


async def _while(stopping: Awaitable[None], job: Awaitable[T]) -> T:
    """``job``'s result, run while ``stopping`` runs; both finish before either's error."""
    stopped, outcome = await asyncio.gather(stopping, job, return_exceptions=True)
    for result in (stopped, outcome):
        if isinstance(result, BaseException):
            raise result
    return cast(T, outcome)


def _figures(
    args: argparse.Namespace,
    placement: Placement,
    results: list[dict[str, Any]],
    request_bytes: dict[str, int],
) -> dict[str, Any]:
    by_name = {r["target"]: r for r in results}
    figures: dict[str, Any] = {
        "pinned": args.pin,
        "cores": {
            "load_generators": sorted(placement.clients) if placement.clients else None,
            "servers": sorted(placement.servers) if placement.servers else None,
        },
        "options": {key: getattr(args, key) for key in OPTIONS},
        "results": results,
        "ratios": report.ratios(results),
        "measured": report.measured(by_name["wsfleet v1"]),
    }
    if args.client == "picows":
        figures["request_bytes"] = request_bytes
        figures["clients_compared"] = compare.side_by_side(
            results, generators.in_flight(args.connections, args.clients), request_bytes
        )
    return figures
