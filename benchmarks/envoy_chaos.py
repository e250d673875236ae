"""The L7 Envoys behind the L4 tier, under SDK clients that each receive a stream: a
rolling restart of all 3 Envoys (each drained through the control plane over
``--budget``), then one Envoy SIGKILLed.

Reports, for the rolling restart: messages lost or duplicated (target 0: every client
receives its whole stream exactly once), handshake success (target >= 99.95 %), and the
reconnect attempts per 0.5 s during each Envoy's turn (its drain, stop and restart) against
the budget's average (the Envoy's clients spread evenly over its budget; target: no bin
above 2x). For the SIGKILL:
every client of the killed Envoy back within 10 s (its last reconnect attempt), none lost
data, and no connection through the other Envoys closed (the clients that reconnected are
exactly those the killed Envoy held). Plot: reconnect attempts per 0.5 s over the rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import processes
from benchmarks.chaos import start_workers, worker_line
from benchmarks.report import publish, ratio, table
from wsfleet.arg_types import positive_float, positive_int
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port
from wsfleet_tools.launcher.rollout import EnvoyRolloutStatus, rollout_envoys

BIN_S = 0.5  # reconnect attempts are counted per half second
ENVOYS = 3
HELD = "http.public.downstream_cx_upgrades_active"  # an L7 Envoy's proxied WebSockets


def bins(times: list[float], start: float, end: float, width: float = BIN_S) -> list[int]:
    """How many of ``times`` fall in each ``width`` bin of [start, end)."""
    count = max(1, int((end - start) / width + 0.999))
    counts = [0] * count
    for at in times:
        if start <= at < end:
            counts[min(count - 1, int((at - start) / width))] += 1
    return counts


def drain_windows(timeline: list[tuple[float, str, str]]) -> list[tuple[str, float, float]]:
    """(Envoy, start, end) of each Envoy's turn in a rollout's timeline: from its
    ``draining`` until the timeline moves on to another Envoy (the next drain, or
    ``done``). Not only until its own ``restarting``: a client closed at the end of the
    drain reconnects after the SDK's first-reconnect window, by when the control plane
    may already have said drained and the restart begun."""
    windows = []
    for index, (at, envoy, phase) in enumerate(timeline):
        if phase != "draining":
            continue
        later = (t for t, other, _ in timeline[index + 1 :] if other != envoy)
        end = next(later, None)
        if end is not None:
            windows.append((envoy, at, end))
    return windows


def drain_figures(
    attempts: list[float], envoy: str, start: float, end: float, budget_s: float
) -> dict[str, Any]:
    """One Envoy's drain: its reconnect attempts per bin, and the peak bin against the
    budget's average (the attempts spread evenly over the budget)."""
    counts = bins(attempts, start, end)
    total = sum(counts)
    average = total * BIN_S / budget_s if budget_s else float("nan")
    return {
        "envoy": envoy,
        "attempts": total,
        "window_s": round(end - start, 3),
        "budget_average_per_bin": average,
        "peak_per_bin": max(counts),
        "peak_to_budget_average": ratio(max(counts), average),
        "per_bin": counts,
    }


async def _held(session: aiohttp.ClientSession, fleet: LocalFleet) -> dict[str, int]:
    """WebSockets each L7 Envoy proxies right now."""
    held = {}
    for name, envoy in fleet.info.envoys.items():
        url = f"http://127.0.0.1:{envoy.admin_port}/stats?filter=^{HELD}$"
        async with session.get(url) as response:
            held[name] = int((await response.text()).partition(": ")[2] or 0)
    return held


async def main(args: argparse.Namespace) -> None:
    stream_s = args.stream * args.interval_ms / 1000
    workers: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-envoy-chaos-") as tmp:
        fleet = LocalFleet(
            FleetOptions(
                sidecars=args.sidecars,
                envoys=ENVOYS,
                api_instances=0,
                port=free_port(),
                admin_port=free_port(),
                state_dir=Path(tmp),
                log_level="warning",
            )
        )
        await fleet.start()
        try:
            workers = await start_workers(fleet, args)  # through the L4: fleet.client_url
            for worker in workers:
                await worker_line(worker, args.max_seconds, "its clients connected")
            streaming = time.time()
            status = await rollout_envoys(fleet, EnvoyRolloutStatus(), args.budget, args.delist)
            if status.phase != "done":
                raise RuntimeError(f"the rolling restart failed: {status.message}")
            rolled = time.time()
            await asyncio.sleep(args.settle)
            async with aiohttp.ClientSession() as session:
                before = await _held(session, fleet)
                victim = max(before, key=lambda name: before[name])
                killed = time.time()
                await fleet.stop_envoy(victim, sig=signal.SIGKILL)
            if time.time() - streaming > stream_s:
                raise RuntimeError(
                    f"the streams ended before the kill: lengthen them (--stream/--interval-ms);"
                    f" the rollout took {rolled - streaming:.1f} s"
                )
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write(b'{"cmd": "report"}\n')
                await asyncio.wait_for(worker.stdin.drain(), 10)
            reports = []
            for worker in workers:
                reports.append(
                    await worker_line(
                        worker, stream_s + args.stream_deadline + 60, "its clients' report"
                    )
                )
                await processes.finish(worker, 30)
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await processes.finish(worker, 10)
            await fleet.stop()
    clients = [c for report in reports for c in report["clients"]]
    figures = _figures(clients, args, status.timeline, rolled, killed, victim, before)
    _plot(clients, status.timeline, streaming, rolled, args.budget, args.output_dir)
    publish("envoy-chaos", figures, _readable(figures), args.output_dir)


def _figures(
    clients: list[dict[str, Any]],
    args: argparse.Namespace,
    timeline: list[tuple[float, str, str]],
    rolled: float,
    killed: float,
    victim: str,
    held_before_kill: dict[str, int],
) -> dict[str, Any]:
    attempts = [t for c in clients for t in c["attempts"]]
    failures = sum(c["failures"] for c in clients)
    errors: collections.Counter[str] = collections.Counter()
    for client in clients:
        errors.update(client["errors"])
    expected = args.stream * len(clients)
    received = sum(c["received"] for c in clients)
    rollout_attempts = [t for t in attempts if t < rolled]
    drains = [
        drain_figures(rollout_attempts, envoy, start, end, args.budget)
        for envoy, start, end in drain_windows(timeline)
    ]
    after_kill = [c for c in clients if any(t >= killed for t in c["attempts"])]
    back_s = [max(c["attempts"]) - killed for c in after_kill]
    peaks = [d["peak_to_budget_average"] for d in drains if d["peak_to_budget_average"]]
    return {
        "clients": len(clients),
        "envoys": ENVOYS,
        "budget_s": args.budget,
        "exact_streams": sum(c["exact"] for c in clients),
        "inexact_streams": sum(not c["exact"] for c in clients),
        "messages_missing": expected - received,
        "rollout": {
            "seconds": round(rolled - timeline[0][0], 3) if timeline else None,
            "handshake_attempts": len(rollout_attempts),
            "drains": drains,
            "worst_peak_to_budget_average": max(peaks) if peaks else None,
        },
        "kill": {
            "envoy": victim,
            "held_before_kill": held_before_kill,
            "killed_envoy_held": held_before_kill[victim],
            "reconnected_clients": len(after_kill),
            "others_untouched": len(after_kill) <= held_before_kill[victim],
            "back_within_s_max": max(back_s) if back_s else None,
            "all_back_within_10_s": all(s <= 10 for s in back_s),
        },
        "handshake_attempts": len(attempts),
        "handshake_success": ratio(len(attempts) - failures, len(attempts), 1),
        "failed_attempts_by_kind": dict(errors.most_common()),
    }


def _readable(figures: dict[str, Any]) -> str:
    rows = [
        (
            d["envoy"],
            d["attempts"],
            d["peak_per_bin"],
            d["budget_average_per_bin"],
            d["peak_to_budget_average"],
        )
        for d in figures["rollout"]["drains"]
    ]
    text = table(
        rows, ["drained Envoy", "reconnects", "peak / 0.5 s", "budget avg / 0.5 s", "peak/avg"]
    )
    kill = figures["kill"]
    success = figures["handshake_success"]
    text += (
        f"\n\n{figures['exact_streams']}/{figures['clients']} clients: whole stream, exactly once;"
        f" {figures['messages_missing']} messages missing; handshake success"
        f" {'n/a' if success is None else f'{success:.5f}'} over {figures['handshake_attempts']}"
        f" attempts ({figures['failed_attempts_by_kind'] or 'no failures'})"
        f"\nrolling restart of {figures['envoys']} Envoys, budget {figures['budget_s']:g} s each:"
        f" {figures['rollout']['seconds']} s"
        f"\nSIGKILL {kill['envoy']} (held {kill['killed_envoy_held']}):"
        f" {kill['reconnected_clients']} clients reconnected, the last within"
        f" {kill['back_within_s_max']} s; others untouched:"
        f" {kill['others_untouched']}"
    )
    return text


def _plot(
    clients: list[dict[str, Any]],
    timeline: list[tuple[float, str, str]],
    start: float,
    end: float,
    budget_s: float,
    directory: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attempts = [t for c in clients for t in c["attempts"] if start <= t < end]
    counts = bins(attempts, start, end)
    figure, axis = plt.subplots(figsize=(10, 3.5))
    axis.bar([i * BIN_S for i in range(len(counts))], counts, width=BIN_S, align="edge")
    for envoy, begin, finish in drain_windows(timeline):
        figures = drain_figures(attempts, envoy, begin, finish, budget_s)
        axis.axvspan(begin - start, finish - start, alpha=0.12, color="tab:orange")
        for level, style in ((1, "--"), (2, ":")):
            axis.hlines(
                level * figures["budget_average_per_bin"],
                begin - start,
                finish - start,
                colors="tab:red",
                linestyles=style,
            )
        axis.text(begin - start, max(counts or [1]) * 1.02, f"drain {envoy}", fontsize=8)
    axis.set(
        title=f"Rolling restart of {ENVOYS} Envoys behind the L4, {len(clients)} SDK clients",
        xlabel="seconds since the streams started",
        ylabel="reconnect attempts / 0.5 s",
    )
    directory.mkdir(parents=True, exist_ok=True)
    figure.savefig(directory / "envoy-rollout.svg", bbox_inches="tight")
    plt.close("all")


SMOKE: dict[str, Any] = {
    "clients": 30,
    "processes": 1,
    "sidecars": 1,
    "budget": 1.0,  # the control plane's delisting time stays (2 s: 4 L4 health checks)
    "settle": 1.0,
    "stream": 40,
    "interval_ms": 500,
    "backoff_base": 0.2,
    "stream_deadline": 30.0,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=positive_int, default=3000)
    parser.add_argument("--processes", type=positive_int, default=3)
    parser.add_argument("--sidecars", type=positive_int, default=2)
    parser.add_argument(
        "--budget", type=positive_float, default=10.0, help="each Envoy's drain budget, s"
    )
    parser.add_argument(
        "--delist",
        type=positive_float,
        default=None,
        help="each drain's delisting time before closes start, s (default: the control plane's)",
    )
    parser.add_argument(
        "--settle", type=positive_float, default=3.0, help="from the rollout to the kill, s"
    )
    parser.add_argument(
        "--stream",
        type=positive_int,
        default=45,
        help="messages per client (long enough to outlast the rollout and the kill)",
    )
    parser.add_argument("--interval-ms", type=positive_int, default=2000)
    parser.add_argument(
        "--backoff-base",
        type=positive_float,
        default=0.5,
        help="the SDK's first reconnect window, s",
    )
    parser.add_argument(
        "--stream-deadline",
        type=positive_float,
        default=120.0,
        help="seconds a client may take, beyond the stream's own length, to receive it all",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on connecting"
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.processes > args.clients:
        return f"--processes {args.processes} is more than --clients {args.clients}"
    if args.clients / args.processes > 9000:
        return "at most 9,000 clients per process (a process opens at most 20,000 files)"
    return None
