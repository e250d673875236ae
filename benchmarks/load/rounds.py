"""``load --outside-rounds N``: the outside client's surge and echo against wsfleet raw,
wsfleet v1 and envoy+bare again, N rounds, the three targets up together and taken in
turn (each round in another order), so that each ratio divides two figures measured
seconds apart rather than minutes.

Why: on this kind of machine one target's figures move by a third between runs minutes
apart (envoy+bare's handshakes/s ran 1,097-1,613 in two runs of the same command), so a
ratio of figures taken one after the other can say 0.68x in one run and 1.08x in the
next. A ratio per round and its median over the rounds says which way the comparison
falls and how far it moves.

:func:`order`, :func:`summarize` and :func:`readable` are pure; :func:`run` starts the
targets and measures.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.load.compare import short_ratio
from benchmarks.load.scenarios import outside
from benchmarks.load.targets import Placement, Target, start_target
from benchmarks.report import ratio, table

BASELINE = "envoy+bare"
TARGETS = ("wsfleet raw", "wsfleet v1", BASELINE)
FIGURES = (  # (key, where in an outside result, higher is better)
    ("handshakes_per_s", ("surge", "handshakes_per_s"), True),
    ("server_cpu_ms_per_handshake", ("surge", "server_cpu_ms_per_handshake"), False),
    ("messages_per_s", ("echo", "messages_per_s"), True),
    ("messages_per_cpu_s", ("echo", "messages_per_cpu_s"), True),
)


def order(names: tuple[str, ...], round_index: int) -> list[str]:
    """The targets of round ``round_index``: rotated by one each round, so that no target
    always runs first (after a quiet spell) or right after the same neighbour."""
    shift = round_index % len(names)
    return [*names[shift:], *names[:shift]]


def source_ip(round_index: int, target_index: int) -> str:
    """A source address of its own for each surge, in 127.0.1.0/24 (the load generators
    use 127.0.0.2-.251, each target's first outside surge 127.0.2.0/24): see
    :func:`benchmarks.load.scenarios.outside.source_ip` for why."""
    index = round_index * len(TARGETS) + target_index
    if index > 253:
        raise ValueError(f"round {round_index}: no source address left in 127.0.1.0/24")
    return f"127.0.1.{index + 1}"


def _figure(result: dict[str, Any], path: tuple[str, str]) -> float | None:
    value = result.get(path[0], {}).get(path[1])
    return float(value) if isinstance(value, int | float) else None


def _stats(values: list[float | None], spread: bool = False) -> dict[str, Any]:
    """The values round by round and the median of those known (with ``spread``: also the
    lowest and highest); None where none is known."""
    known = [v for v in values if v is not None]
    stats: dict[str, Any] = {
        "rounds": values,
        "median": statistics.median(known) if known else None,
    }
    if spread:
        stats["lowest"] = min(known) if known else None
        stats["highest"] = max(known) if known else None
    return stats


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per target, each figure round by round and its median; per wsfleet target, each
    figure's ratio to the baseline's of the same round (for CPU per handshake: the
    baseline's over ours, so that above 1 is better in every column), and the median,
    lowest and highest of those ratios."""
    rounds = min((len(results) for results in runs.values()), default=0)
    summary: dict[str, Any] = {"rounds": rounds, "targets": {}, "ratios": {}}
    for name, results in runs.items():
        summary["targets"][name] = {
            key: _stats([_figure(r, path) for r in results[:rounds]]) for key, path, _ in FIGURES
        }
    base = runs.get(BASELINE)
    if base is None:
        return summary
    for name, results in runs.items():
        if name == BASELINE:
            continue
        ratios: dict[str, Any] = {}
        for key, path, higher_is_better in FIGURES:
            per_round: list[float | None] = []
            for ours, theirs in zip(results[:rounds], base[:rounds], strict=True):
                a, b = _figure(ours, path), _figure(theirs, path)
                if a is None or b is None:
                    per_round.append(None)
                else:
                    per_round.append(ratio(a, b) if higher_is_better else ratio(b, a))
            ratios[key] = _stats(per_round, spread=True)
        summary["ratios"][name] = ratios
    return summary


def _spread(ratios: dict[str, Any]) -> str:
    if ratios["median"] is None:
        return "n/a"
    median, lowest, highest = (short_ratio(ratios[k]) for k in ("median", "lowest", "highest"))
    return f"{median} ({lowest}-{highest})"


def readable(summary: dict[str, Any]) -> str:
    """The medians per target, then each wsfleet target's ratios: median (lowest-highest)."""
    rows = []
    for name, figures in summary["targets"].items():
        rows.append(
            (
                name,
                *(
                    "n/a" if figures[key]["median"] is None else round(figures[key]["median"], 3)
                    for key, _, _ in FIGURES
                ),
            )
        )
    headers = ["target (median)", "hs/s", "server ms/hs", "echo msg/s", "echo per CPU-s"]
    text = (
        f"outside client, {summary['rounds']} interleaved rounds (the targets up together,"
        " taken in turn):\n" + table(rows, headers)
    )
    ratio_rows = []
    for name, ratios in summary["ratios"].items():
        ratio_rows.append(
            (
                f"{name} / {BASELINE}",
                *(_spread(ratios[key]) for key, _, _ in FIGURES),
            )
        )
    if ratio_rows:
        text += "\n" + table(
            ratio_rows,
            [
                "ratio per round: median (lowest-highest)",
                "hs/s",
                f"CPU per hs ({BASELINE}'s / ours)",
                "echo msg/s",
                "echo per CPU-s",
            ],
        )
    return text


async def run(args: argparse.Namespace, placement: Placement, tmp: Path) -> dict[str, Any]:
    """Start the three targets, measure ``--outside-rounds`` rounds, stop them."""
    targets: dict[str, Target] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in TARGETS}
    try:
        for name in TARGETS:
            v1 = name.endswith("v1")
            targets[name] = await start_target(tmp, name, None, 1, v1, placement.servers, "rounds-")
        for round_index in range(args.outside_rounds):
            for name in order(TARGETS, round_index):
                source = source_ip(round_index, TARGETS.index(name))
                runs[name].append(await outside.run(targets[name], args, placement, source))
    finally:
        for target in targets.values():
            if target.stop is not None:
                await target.stop()
    return {**summarize(runs), "results": runs}
