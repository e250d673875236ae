"""Many connections held through the whole local fleet on one machine, in steps (e.g.
10k, 25k, 50k), under a steady message rate: what each connection costs as the count grows.

The fleet is ``LocalFleet`` with ``--envoys`` L7 Envoys and ``--sidecars`` gateways (and
its Redis, control plane and backend). A process here may open at most 20,000 files: an
Envoy holds 2 per WebSocket (downstream + upstream), a gateway 1, so the connections are
spread over several of each, and over several client processes
(benchmarks/scale_client.py, picows: no task per connection; at most ``--per-client``
connections each, each from a source address of its own, 127.0.0.2 upwards: ~28k
ephemeral ports per source and destination).
With two Envoys or more the fleet also starts its L4 tier in front of them; it would need 2
files per connection for all of them, so the clients connect to the L7 Envoys' own
listeners directly, spread evenly (the L4 tier is measured by ``envoy-chaos``; it runs
here, idle, and counts in the fleet's memory as a constant).

For each step the connections added since the last step are opened at ``--rate``
handshakes/s (all clients), held ``--settle`` seconds, and memory is read (idle); then for
``--measure`` seconds every client sends ``--message-rate`` echo messages/s in total,
spread round-robin over the connections it holds (each echoed by the backend: client ->
Envoy -> gateway -> backend and back), while WebSocket pings (client ping frame, the
gateway's pong, through Envoy) go one connection after another at ``--ping-rate``/s in
total; then memory is read again (after traffic). The gateways' own heartbeats ping every
connection every heartbeat interval (their default, printed in the report) in the
background: at 50k and 15 s that is another ~3,700 pings/s (``--heartbeat-interval``
changes it).

Reported per step: handshake success (% of the handshakes attempted) and rate, handshake
latency, echo and ping RTT p50/p99, echo messages/s achieved, connections still open after
traffic, RSS per connection by process kind (Envoy, gateway, Redis, the whole fleet:
every process the fleet started) — RSS growth over the fleet before any connection, divided
by the connections held — files open per process, the cores busy (the fleet's by kind
while only holding and with the traffic, the load generators', the whole machine's share:
other work included), the gateways' collector passes during the traffic (how many, and
how many stood a gateway's event loop still for more than 10 and 50 ms: from each one's
``wsfleet_gateway_gc_pause_seconds``), and the load average. The peer of every step is
the first step: memory per connection at each step / at the first (target: within 5 % at
the largest step). Plot: ``scale.svg`` (memory per connection, p99 RTT and cores busy against
connections).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks.load.generators import (
    close,
    core_busy,
    core_times,
    read_event,
    send,
    shares,
    spawn,
)
from benchmarks.load.targets import Target
from benchmarks.report import fmt_ratio, ms, publish, ratio, summary, table
from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet.settings import SidecarSettings
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

FILE_LIMIT = 20_000  # ulimit -n per process on the benchmark machine
SPARE_FILES = 1_000  # a process's own files besides its connections (logs, listeners, ...)
MAX_SOURCES = 250  # client source addresses 127.0.0.2 .. 127.0.0.251 (254 is another role's)
KINDS = ("envoy", "sidecar", "redis", "fleet")  # memory per connection is reported for these
HEARTBEAT_S = next(  # the gateways' default: each pings every connection this often
    float(f.default)  # type: ignore[arg-type]
    for f in fields(SidecarSettings)
    if f.name == "heartbeat_interval_s"
)
KB = 1024
GC_PAUSE = "wsfleet_gateway_gc_pause_seconds"  # each gateway's collector passes (histogram)
LONG_PAUSES_S = (0.01, 0.05)  # passes longer than these are counted


def steps_list(text: str) -> list[int]:
    """``10000,25000,50000``: connection counts, strictly increasing."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated connection counts") from None
    if not steps or steps[0] < 1 or any(b <= a for a, b in itertools.pairwise(steps)):
        raise argparse.ArgumentTypeError(f"{text!r}: counts must be positive and increasing")
    return steps


def kind_of(child_name: str) -> str:
    """The kind a fleet child counts under: the L7 Envoys are ``envoy`` (``l4``, the tier
    in front of them, stays apart), the gateways ``sidecar``, the rest by their name."""
    if child_name == "l4":
        return "l4"
    for kind in ("envoy", "sidecar", "api", "backend", "xds", "redis"):
        if child_name.startswith(kind):
            return kind
    return child_name


@dataclass(frozen=True)
class Client:
    """One load-generator process of a step: ``count`` connections to one Envoy."""

    envoy: str
    url: str
    count: int
    index: int  # its source address is 127.0.0.{2 + index}


def plan_clients(
    added: int, urls: dict[str, str], per_client: int, first_index: int
) -> list[Client]:
    """The ``added`` connections of a step: even over the Envoys, each Envoy's share over
    as few processes as ``per_client`` allows."""
    clients: list[Client] = []
    for (name, url), share in zip(urls.items(), shares(added, len(urls)), strict=False):
        for count in shares(share, -(-share // per_client)):
            clients.append(Client(name, url, count, first_index + len(clients)))
    return clients


Reading = dict[str, dict[str, Any]]  # child name -> {"kind", "pid", "rss", "fds", "cpu_s"}


def read_fleet(fleet: LocalFleet) -> Reading:
    """RSS (bytes), open files and CPU seconds so far of every running process the fleet
    started."""
    reading: Reading = {}
    for child in fleet.supervisor.children:
        if not child.running:
            continue
        try:
            process = psutil.Process(child.pid)
            cpu = process.cpu_times()
            reading[child.name] = {
                "kind": kind_of(child.name),
                "pid": child.pid,
                "rss": process.memory_info().rss,
                "fds": process.num_fds(),
                "cpu_s": cpu.user + cpu.system,
            }
        except psutil.NoSuchProcess:
            continue
    return reading


def rss_by_kind(reading: Reading) -> dict[str, int]:
    """Bytes of RSS per kind, and ``fleet``: all of them."""
    totals: dict[str, int] = {"fleet": 0}
    for facts in reading.values():
        totals[facts["kind"]] = totals.get(facts["kind"], 0) + facts["rss"]
        totals["fleet"] += facts["rss"]
    return totals


def kb_per_connection(now: Reading, base: Reading, held: int) -> dict[str, float | None]:
    """KB of RSS growth per held connection, by kind (None when nothing is held)."""
    after, before = rss_by_kind(now), rss_by_kind(base)
    return {
        kind: round((after.get(kind, 0) - before.get(kind, 0)) / KB / held, 3) if held else None
        for kind in sorted(after)
    }


def cores_by_kind(after: Reading, before: Reading, seconds: float) -> dict[str, float | None]:
    """Cores each kind kept busy between two readings (CPU seconds / wall seconds), and
    ``fleet``: all of them."""
    spent: dict[str, float] = {"fleet": 0.0}
    for name, facts in after.items():
        used = facts["cpu_s"] - before.get(name, {}).get("cpu_s", 0.0)
        spent[facts["kind"]] = spent.get(facts["kind"], 0.0) + used
        spent["fleet"] += used
    return {kind: ratio(cpu_s, seconds) for kind, cpu_s in sorted(spent.items())}


def client_cpu_s(generators: list[asyncio.subprocess.Process]) -> float:
    """CPU seconds the load generators have used so far."""
    total = 0.0
    for generator in generators:
        try:
            cpu = psutil.Process(generator.pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += cpu.user + cpu.system
    return total


def pause_buckets(metrics_page: str) -> dict[float, float]:
    """A gateway's collector passes so far, from its ``/metrics`` page: the cumulative
    count at or under each bucket bound (seconds; ``inf``: all), every generation together."""
    counts: dict[float, float] = {}
    for line in metrics_page.splitlines():
        if line.startswith(GC_PAUSE + "_bucket{"):
            labels, _, value = line.rpartition(" ")
            bound = float(labels.partition('le="')[2].partition('"')[0])
            counts[bound] = counts.get(bound, 0.0) + float(value)
    return counts


def collector_figures(
    after: list[dict[float, float]], before: list[dict[float, float]]
) -> dict[str, int]:
    """The gateways' collector passes between two readings (one per gateway, same order):
    how many, and how many took longer than each of :data:`LONG_PAUSES_S`."""
    inf = float("inf")

    def passes(over: float) -> int:
        return int(
            sum(
                (a.get(inf, 0) - a.get(over, 0)) - (b.get(inf, 0) - b.get(over, 0))
                for a, b in zip(after, before, strict=True)
            )
        )

    figures = {"passes": passes(0.0)}
    for bound in LONG_PAUSES_S:
        figures[f"over_{bound * 1000:g}_ms"] = passes(bound)
    return figures


async def read_pauses(fleet: LocalFleet) -> list[dict[float, float]]:
    """Each gateway's :func:`pause_buckets` now."""
    pages = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for pod in fleet.info.sidecars.values():
            async with session.get(f"http://127.0.0.1:{pod.admin_port}/metrics") as response:
                pages.append(pause_buckets(await response.text()))
    return pages


def _merge_errors(results: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for result in results:
        for kind, n in result["errors"].items():
            merged[kind] = merged.get(kind, 0) + n
    return merged


class Run:
    """The fleet, the load generators started so far and what each holds."""

    def __init__(self, fleet: LocalFleet, args: argparse.Namespace) -> None:
        self.fleet = fleet
        self.args = args
        self.generators: list[asyncio.subprocess.Process] = []
        self.held: list[int] = []  # connections each generator holds
        self.envoy_of: list[str] = []

    @property
    def total(self) -> int:
        return sum(self.held)

    async def open(self, added: int, step: int) -> dict[str, Any]:
        """Open ``added`` connections more; their handshake figures."""
        args = self.args
        urls = self.fleet.client_urls
        clients = plan_clients(added, urls, args.per_client, len(self.generators))
        key_file = self.fleet.state_dir / "auth.key"
        started = time.perf_counter()
        spawned: list[asyncio.subprocess.Process] = []
        for client in clients:
            target = Target(client.envoy, client.url, {}, key_file, v1=args.v1)
            spawned.append(
                await spawn(
                    target,
                    client.count,
                    args.rate * client.count / added,
                    client.index,
                    prefix=f"s{step}-",
                    max_seconds=args.max_seconds,
                    module="benchmarks.scale_client",
                )
            )
        self.generators += spawned
        progress: dict[int, int] = {}
        results = await asyncio.gather(
            *(
                read_event(g, "connected", progress, c.index, args.max_seconds + 30)
                for g, c in zip(spawned, clients, strict=True)
            )
        )
        wall_s = time.perf_counter() - started
        self.held += [r["opened"] for r in results]
        self.envoy_of += [c.envoy for c in clients]
        opened = sum(r["opened"] for r in results)
        connect_s = max(r["seconds"] for r in results)
        latencies = [s for r in results for s in r["handshake_s"]]
        return {
            "attempted": added,
            "opened": opened,
            "success_pct": 100.0 * opened / added,
            "errors": _merge_errors(results),
            "client_processes": len(clients),
            "connect_s": round(connect_s, 3),
            "wall_s": round(wall_s, 3),
            "handshakes_per_s": ratio(opened, connect_s),
            "handshake_ms": {k: ms(v) if k != "n" else v for k, v in summary(latencies).items()},
        }

    async def traffic(self) -> dict[str, Any]:
        """``--message-rate`` echoes/s and ``--ping-rate`` pings/s over every connection held
        (each generator its share) for ``--measure`` seconds."""
        args = self.args
        total = self.total
        live = [(g, n) for g, n in zip(self.generators, self.held, strict=True) if n]
        for g, n in live:
            await send(
                g,
                cmd="keepalive",
                rate=args.message_rate * n / total,
                seconds=args.measure,
                ping_per_second=args.ping_rate * n / total,
                size=args.size,
            )
        progress: dict[int, int] = {}
        results = await asyncio.gather(
            *(
                read_event(g, "keepalive", progress, i, args.measure + 60)
                for i, (g, _) in enumerate(live)
            )
        )
        seconds = max(r["seconds"] for r in results)
        received = sum(r["echo_received"] for r in results)
        return {
            "seconds": round(seconds, 3),
            "echo_sent": sum(r["echo_sent"] for r in results),
            "echo_received": received,
            "messages_per_s": ratio(received, seconds),
            "send_errors": sum(r["send_errors"] for r in results),
            "pings_lost": sum(r["pings_lost"] for r in results),
            "still_open": sum(r["open"] for r in results),
            "echo_ms": _ms(summary([s for r in results for s in r["echo_rtt_s"]])),
            "ping_ms": _ms(summary([s for r in results for s in r["ping_rtt_s"]])),
        }

    def per_envoy(self) -> dict[str, int]:
        held: dict[str, int] = {}
        for envoy, n in zip(self.envoy_of, self.held, strict=True):
            held[envoy] = held.get(envoy, 0) + n
        return held


def _ms(figures: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if k == "n" else ms(v)) for k, v in figures.items()}


def _fds(reading: Reading) -> dict[str, int]:
    return {name: facts["fds"] for name, facts in sorted(reading.items())}


async def measure_step(
    run: Run, step: int, index: int, base: Reading, args: argparse.Namespace
) -> dict[str, Any]:
    handshakes = await run.open(step - run.total, index)
    opened, settle_started = await asyncio.to_thread(read_fleet, run.fleet), time.perf_counter()
    await asyncio.sleep(args.settle)
    idle = await asyncio.to_thread(read_fleet, run.fleet)
    # holding only: the gateways' heartbeats and the registry's upkeep
    holding_cores = cores_by_kind(idle, opened, time.perf_counter() - settle_started)
    pauses_before = await read_pauses(run.fleet)
    machine_before, clients_before = core_times(None), client_cpu_s(run.generators)
    started = time.perf_counter()
    traffic = await run.traffic()
    machine_after, seconds = core_times(None), time.perf_counter() - started
    # the gateways' collector passes meanwhile: each stood their event loop still
    traffic["collector"] = collector_figures(await read_pauses(run.fleet), pauses_before)
    busy = await asyncio.to_thread(read_fleet, run.fleet)
    # how busy the fleet, the load generators and the whole machine (other work on it
    # included) were meanwhile
    traffic["fleet_cores"] = cores_by_kind(busy, idle, seconds)
    traffic["client_cores"] = ratio(client_cpu_s(run.generators) - clients_before, seconds)
    traffic["machine_busy"] = core_busy(machine_before, machine_after)
    held = run.total
    row: dict[str, Any] = {
        "connections": step,
        "held": held,
        "held_per_envoy": run.per_envoy(),
        "handshakes": handshakes,
        "holding_cores": holding_cores,
        "traffic": traffic,
        "kb_per_connection_idle": kb_per_connection(idle, base, held),
        "kb_per_connection_after_traffic": kb_per_connection(busy, base, held),
        "rss_mb": {k: round(v / 2**20, 1) for k, v in rss_by_kind(busy).items()},
        "fds": _fds(busy),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"  {step:>7,} held {held:,}: handshakes {handshakes['success_pct']:.2f} %,"
        f" ping p99 {traffic['ping_ms']['p99']} ms, echo p99 {traffic['echo_ms']['p99']} ms,"
        f" fleet {row['kb_per_connection_idle'].get('fleet')} KB/conn",
        flush=True,
    )
    return row


def add_peers(rows: list[dict[str, Any]]) -> None:
    """Each step's memory per connection against the first step's (its peer)."""
    first = rows[0]
    for row in rows:
        for phase in ("idle", "after_traffic"):
            row[f"kb_vs_first_{phase}"] = {
                kind: ratio(value, first[f"kb_per_connection_{phase}"].get(kind), 0.001)
                for kind, value in row[f"kb_per_connection_{phase}"].items()
            }


def _max_fds(row: dict[str, Any], kind: str) -> int:
    return max((n for name, n in row["fds"].items() if kind_of(name) == kind), default=0)


def readable(rows: list[dict[str, Any]]) -> str:
    header = [
        "connections",
        "handshakes ok %",
        "handshakes/s",
        "echo msg/s",
        "echo p50 ms",
        "echo p99 ms",
        "ping p50 ms",
        "ping p99 ms",
        "open after",
        *(f"{kind} KB/conn" for kind in KINDS),
        "fleet vs first",
        "fleet cores",
        "client cores",
        "machine busy",
        "gc passes (>10/>50 ms)",
        "max fds envoy",
        "max fds sidecar",
        "load avg 1m",
    ]
    lines = []
    for row in rows:
        traffic, idle = row["traffic"], row["kb_per_connection_idle"]
        lines.append(
            [
                f"{row['connections']:,}",
                round(row["handshakes"]["success_pct"], 3),
                row["handshakes"]["handshakes_per_s"],
                traffic["messages_per_s"],
                traffic["echo_ms"]["p50"],
                traffic["echo_ms"]["p99"],
                traffic["ping_ms"]["p50"],
                traffic["ping_ms"]["p99"],
                traffic["still_open"],
                *(idle.get(kind) for kind in KINDS),
                fmt_ratio(row["kb_vs_first_idle"].get("fleet")),
                traffic["fleet_cores"].get("fleet"),
                traffic["client_cores"],
                traffic["machine_busy"],
                "{passes} ({over_10_ms}/{over_50_ms})".format(**traffic["collector"]),
                _max_fds(row, "envoy"),
                _max_fds(row, "sidecar"),
                row["load_average"][0],
            ]
        )
    return table(lines, header)


def _series(values: list[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Memory per connection, p99 round trips (log scale) and the cores in use, against
    the connections held."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    counts = [row["held"] for row in rows]
    figure, (memory, latency, cores) = plt.subplots(1, 3, figsize=(15, 4.2))
    for kind in KINDS:
        values = [row["kb_per_connection_idle"].get(kind) for row in rows]
        memory.plot(counts, _series(values), "o-", label=kind)
    memory.set(ylabel="RSS KB per connection", ylim=(0, None))
    memory.set_title("memory per connection (idle)", fontsize=10)
    for key, label in (("ping_ms", "ping p99"), ("echo_ms", "echo p99")):
        latency.plot(
            counts, _series([row["traffic"][key]["p99"] for row in rows]), "o-", label=label
        )
    latency.axhline(30, color="tab:red", linestyle="--", linewidth=1, label="target 30 ms")
    latency.set(ylabel="ms (log scale)", yscale="log")
    latency.set_title("round trips under the steady message rate", fontsize=10)
    for values, label in (
        ([row["holding_cores"].get("fleet") for row in rows], "fleet, holding only"),
        ([row["traffic"]["fleet_cores"].get("fleet") for row in rows], "fleet, with traffic"),
        ([row["traffic"]["client_cores"] for row in rows], "load generators, with traffic"),
        (
            [(row["traffic"]["machine_busy"] or 0) * (os.cpu_count() or 1) for row in rows],
            "machine",
        ),
    ):
        cores.plot(counts, _series(values), "o-", label=label)
    cores.set(ylabel="cores busy", ylim=(0, None))
    cores.set_title("CPU (all processes on the machine: 'machine')", fontsize=10)
    for axis in (memory, latency, cores):
        axis.set_xlabel("connections held")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close("all")


def heartbeat_args(interval_s: float | None) -> tuple[str, ...]:
    """The gateways' flags for a heartbeat interval (and the same timeout, the defaults'
    proportion); none for their defaults."""
    if interval_s is None:
        return ()
    return ("--heartbeat-interval", f"{interval_s:g}", "--heartbeat-timeout", f"{interval_s:g}")


async def main(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="wsfleet-scale-") as tmp:
        fleet = LocalFleet(
            FleetOptions(
                sidecars=args.sidecars,
                envoys=args.envoys,
                port=free_port(),
                admin_port=free_port(),
                state_dir=Path(tmp),
                log_level="warning",
                api_instances=0,  # the server API is not on the WebSocket path
                sidecar_args=heartbeat_args(args.heartbeat_interval),
            )
        )
        await fleet.start()
        run = Run(fleet, args)
        try:
            await asyncio.sleep(args.settle)
            base = await asyncio.to_thread(read_fleet, fleet)
            for index, step in enumerate(args.steps):
                rows.append(await measure_step(run, step, index, base, args))
        finally:
            await close(run.generators)
            await fleet.stop()
    add_peers(rows)
    options = {
        key: getattr(args, key)
        for key in (
            "steps",
            "envoys",
            "sidecars",
            "rate",
            "message_rate",
            "ping_rate",
            "size",
            "measure",
            "settle",
            "per_client",
            "v1",
        )
    }
    options["heartbeat_interval_s"] = args.heartbeat_interval or HEARTBEAT_S
    options["cpus"] = os.cpu_count()
    title = (
        f"{args.envoys} Envoys, {args.sidecars} gateways, {args.message_rate:g} msg/s,"
        f" {'v1' if args.v1 else 'raw'} protocol,"
        f" heartbeats every {args.heartbeat_interval or HEARTBEAT_S:g} s"
    )
    plot(rows, args.output_dir / "scale.svg", title)
    publish("scale", {"options": options, "steps": rows}, readable(rows), args.output_dir)


SMOKE: dict[str, Any] = {
    "steps": "300,600",  # parsed by --steps' type, as on the command line
    "envoys": 2,
    "sidecars": 2,
    "rate": 1000.0,
    "message_rate": 200.0,
    "ping_rate": 50.0,
    "measure": 1.0,
    "settle": 0.3,
    "max_seconds": 30.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps",
        type=steps_list,
        default="10000,25000,50000",
        help="connection counts held at each step, increasing (default %(default)s)",
    )
    parser.add_argument("--envoys", type=positive_int, default=7, help="L7 Envoys")
    parser.add_argument("--sidecars", type=positive_int, default=4, help="gateways")
    parser.add_argument(
        "--rate", type=positive_float, default=1000.0, help="handshakes/s, all clients"
    )
    parser.add_argument(
        "--message-rate",
        type=non_negative_float,
        default=2000.0,
        help="echo messages/s, all clients, while measuring",
    )
    parser.add_argument(
        "--ping-rate",
        type=non_negative_float,
        default=200.0,
        help="WebSocket pings/s (RTT probes), all clients, while measuring",
    )
    parser.add_argument("--size", type=positive_int, default=64, help="bytes per echo message")
    parser.add_argument(
        "--measure", type=positive_float, default=15.0, help="seconds of traffic per step"
    )
    parser.add_argument(
        "--settle",
        type=non_negative_float,
        default=3.0,
        help="seconds between the connections of a step and its memory reading",
    )
    parser.add_argument(
        "--per-client",
        type=positive_int,
        default=9000,
        help="connections per load-generator process, at most",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=positive_float,
        default=None,
        help=f"the gateways' heartbeat interval, s (default theirs, {HEARTBEAT_S:g}; timeout:"
        " the same); each pings every connection this often, through Envoy",
    )
    parser.add_argument(
        "--v1",
        action="store_true",
        help="speak protocol wsfleet.v1 (replay: Redis then keeps the echoed messages too)",
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on every phase"
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    """Refuse a run that would hit a process's file limit or run out of source addresses."""
    largest = args.steps[-1]
    usable = FILE_LIMIT - SPARE_FILES
    per_envoy = -(-largest // args.envoys)
    if 2 * per_envoy > usable:
        return (
            f"{largest:,} connections over {args.envoys} Envoys: {per_envoy:,} each, 2 files"
            f" per connection, more than {usable:,}: use --envoys"
            f" {-(-2 * largest // usable)} or more"
        )
    # Envoy hashes users over the gateways: leave a quarter for an uneven spread
    per_sidecar = -(-largest * 5 // (4 * args.sidecars))
    if per_sidecar > usable:
        return (
            f"{largest:,} connections over {args.sidecars} gateways: up to {per_sidecar:,} on"
            f" one, more than {usable:,} files: use --sidecars {-(-largest * 5 // (4 * usable))}"
            " or more"
        )
    if args.per_client > usable:
        return f"--per-client {args.per_client:,}: at most {usable:,} (the file limit)"
    envoys = {str(n): "" for n in range(args.envoys)}
    sources, previous = 0, 0
    for step in args.steps:
        sources += len(plan_clients(step - previous, envoys, args.per_client, 0))
        previous = step
    if sources > MAX_SOURCES:
        return (
            f"{sources} load-generator processes (one source address each), more than"
            f" {MAX_SOURCES}: fewer steps or Envoys, or a larger --per-client"
        )
    return None
