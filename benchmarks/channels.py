"""Channels under load, each figure beside its target in one run (docs/channels.md).

1. **Fan-out per server CPU-second, wsfleet vs bare aiohttp** (target >= 0.5x):
   ``--fanout-connections`` raw WebSockets subscribed to ``feed:fanout`` by their token's
   ``subs`` claim, through Envoy, over ``--sidecars`` gateways; publications of 64-byte
   texts through the server API, in two patterns: a busy channel (``--fanout-publications``
   at ``--fanout-rate``/s from ``--fanout-publishers`` publishers at once: publications
   that reach a gateway together leave in one write per socket) and isolated publications
   (``--isolated-publications`` at ``--isolated-rate``/s, one publisher: each pays its own
   writes, the gateway's and Envoy's). Every client counts arrivals; deliveries per
   CPU-second of every server process of the fleet (Envoy, gateways, server API
   instances, Redis, control plane, backend). The peer, in the same run: the bare aiohttp
   server (benchmarks/bare_echo.py) with as many connections and as many ``POST
   /broadcast`` of the same bytes, in the same patterns.
2. **Latency to the last subscriber** (target p99 < 100 ms): ``--latency-subscribers``
   raw subscribers of ``feed:latency``; ``--latency-publications`` at ``--latency-rate``/s,
   each carrying its send time; per publication, the last arrival over every subscriber
   minus the send time (``time.perf_counter()``: CLOCK_MONOTONIC, one clock for every
   process of the machine). The bare server, in the same run, is the floor.
3. **SIGKILL of a gateway under a stream** (target: every subscriber ends with every
   publication exactly once, in order): ``--failover-subscribers`` Python SDK clients
   (protocol v1, WebSocket) each ``subscribe("bench:failover")`` (benchmarks/channels_policy.yaml:
   a history of 10,000, presence without joins and leaves); ``p1..pN`` published at
   ``--failover-rate``/s for ``--failover-seconds``; a third of the way the gateway with
   the most subscribers is SIGKILLed. Duplicates, gaps and reorderings are counted per
   subscriber, and the time until every moved subscriber was subscribed again.
4. **Presence after that SIGKILL** (target: matches the live subscribers within the
   presence TTL, ``--presence-ttl``, plus one refresh period, a third of it): the server
   API's ``presence_stats`` of ``bench:failover``, polled from the kill until it counts
   exactly the live subscribers. The SDK subscribers resume their sessions elsewhere
   (same session id: their entries are rewritten, not left behind), so
   ``--presence-ghosts`` raw subscribers of the channel (token ``subs``), which never
   come back, are what the killed gateway leaves behind: its share of them must expire.

Publications go one after another (they keep their order), each due at ``n / rate``; a
publisher behind schedule goes on back to back, so the achieved rate is reported beside
the one asked. Each scenario also reports how busy the server and client cores were
(near 100 % on the client side, the clients set the pace) and the server CPU by process.

Run: ``python -m benchmarks channels [--pin]`` (``--pin``: clients and this process on
core 0, every server process on core 1). ``--smoke`` runs it at CI size. Output: JSON and
a table, saved to ``--output-dir``/channels.json (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks import processes
from benchmarks.load.generators import close, read_event, send, shares, usage
from benchmarks.load.targets import Placement, Target
from benchmarks.load.targets import start_bare as start_bare_server
from benchmarks.report import MIN_CPU_S, fmt_ratio, ms, per, publish, ratio, summary, table
from wsfleet.arg_types import non_negative_float, positive_float, positive_int
from wsfleet_tools.launcher.fleet import FleetOptions, LocalFleet
from wsfleet_tools.launcher.ports import free_port

Publish = Callable[[str], Awaitable[bool]]  # one publication; whether it was accepted

FANOUT_CHANNEL = "feed:fanout"
LATENCY_CHANNEL = "feed:latency"
FAILOVER_CHANNEL = "bench:failover"
POLICY = Path(__file__).resolve().parent / "channels_policy.yaml"
TEXT_BYTES = 64
TARGETS = {"fanout_ratio": 0.5, "latency_p99_s": 0.1}
HTTP_TIMEOUT_S = 10.0
WARM_UP_TRIES = 3  # a warm-up publication sent again if some subscriber has not got it
WARM_UP_WAIT_S = 10.0
CATCH_UP_S = 180.0  # after the last publication, the bound on every subscriber having all
SCENARIOS = ("fanout", "latency", "failover")
PRESENCE_POLL_S = 0.2
GHOST_PREFIX = "ghost"  # the user ids of the raw subscribers that never come back
QUIET_CORES = 0.3  # server cores busy below which the fleet is settled (joins delivered)
MAX_PER_PROCESS = 15_000  # sockets per client process (the file limit is 20,000)


@dataclass(frozen=True)
class Sent:
    """A publication: its number (from 1), data, send time (perf_counter), whether it
    was accepted, and how long the call took."""

    n: int
    text: str
    at: float
    ok: bool
    took: float


# -- publishing ------------------------------------------------------------------------


def api_publisher(http: aiohttp.ClientSession, fleet: LocalFleet, channel: str) -> Publish:
    """Publications to ``channel`` through the server API (behind Envoy)."""
    headers = {"Authorization": f"Bearer {fleet.api_key}"}

    async def publish_one(text: str) -> bool:
        body = {"channel": channel, "data": text}
        return await _post(http, f"{fleet.api_url}/publish", headers, json.dumps(body))

    return publish_one


def offset_publisher(
    http: aiohttp.ClientSession, fleet: LocalFleet, channel: str, offsets: dict[str, int]
) -> Publish:
    """:func:`api_publisher` that keeps each publication's offset (its place in the
    channel) in ``offsets``, by its text."""
    headers = {"Authorization": f"Bearer {fleet.api_key}", "Content-Type": "application/json"}

    async def publish_one(text: str) -> bool:
        body = json.dumps({"channel": channel, "data": text})
        try:
            async with http.post(f"{fleet.api_url}/publish", data=body, headers=headers) as answer:
                if answer.status != 200:
                    return False
                offsets[text] = int((await answer.json())["offset"])
                return True
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return False

    return publish_one


def bare_publisher(http: aiohttp.ClientSession, target: Target) -> Publish:
    """``POST /broadcast``: the bare server sends the body to every connection."""
    url = target.url.replace("ws://", "http://").removesuffix("/ws") + "/broadcast"

    async def publish_one(text: str) -> bool:
        return await _post(http, url, {}, text)

    return publish_one


async def _post(http: aiohttp.ClientSession, url: str, headers: dict[str, str], body: str) -> bool:
    try:
        async with http.post(url, data=body, headers=headers) as response:
            await response.read()
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def concurrent(
    publish_one: Publish,
    count: int,
    rate: float,
    text_for: Callable[[int, float], str],
    max_seconds: float,
    concurrency: int,
    before: Callable[[int], Awaitable[None]] | None = None,
) -> list[Sent]:
    """``count`` publications, the n-th due at ``(n - 1) / rate``, by ``concurrency``
    publishers at once (many applications publishing to one busy channel): a slow answer
    holds back one publisher, not the channel. Order is kept only with one publisher;
    ``Sent`` by number. Stops at ``max_seconds``."""
    started = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    numbers = iter(range(1, count + 1))
    sent: list[Sent] = []

    async def publisher() -> None:
        for n in numbers:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(max(0.0, started + (n - 1) / rate - time.perf_counter()))
            if before is not None:
                await before(n)
            at = time.perf_counter()
            text = text_for(n, at)
            ok = await publish_one(text)
            sent.append(Sent(n, text, at, ok, time.perf_counter() - at))

    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    return sorted(sent, key=lambda s: s.n)


def latency_text(n: int, at: float) -> str:
    return f"latency-{n:06d} sent {at:.6f} ".ljust(TEXT_BYTES, "x")


# -- the targets -----------------------------------------------------------------------


async def start_fleet(run_dir: Path, args: argparse.Namespace, placement: Placement) -> LocalFleet:
    options = FleetOptions(
        sidecars=args.sidecars,
        port=free_port(),
        admin_port=free_port(),
        state_dir=run_dir,
        log_level="warning",
        sidecar_args=("--presence-ttl", str(args.presence_ttl)),
        policy_path=args.policy,
    )
    fleet = LocalFleet(options)
    with processes.own_affinity(placement.servers):
        await fleet.start()  # stops what it started if it fails
    return fleet


def fleet_target(fleet: LocalFleet) -> Target:
    """Every server process of the fleet, by its name (envoy, sidecar-1, api-1, redis...)."""
    roles = {
        child.name: psutil.Process(child.pid)
        for child in fleet.supervisor.children
        if child.running and child.pid is not None
    }
    return Target("wsfleet", fleet.client_url, roles, fleet.state_dir / "auth.key", stop=fleet.stop)


# -- raw subscribers -------------------------------------------------------------------


async def open_subscribers(
    target: Target,
    count: int,
    channel: str,
    prefix: str,
    args: argparse.Namespace,
    placement: Placement,
    processes_count: int | None = None,
) -> tuple[list[asyncio.subprocess.Process], dict[str, Any]]:
    """Raw subscriber processes (benchmarks/channel_workers.py; ``--clients`` unless
    ``processes_count``), once each has connected."""
    workers: list[asyncio.subprocess.Process] = []
    try:
        for index, share in enumerate(shares(count, processes_count or args.clients)):
            workers.append(
                await processes.spawn(
                    *(sys.executable, "-m", "benchmarks.channel_workers", "raw"),
                    *("--url", target.url, "--count", str(share), "--channel", channel),
                    *("--key-file", str(target.key_file), "--prefix", f"{prefix}{index}"),
                    *("--source-ip", f"127.0.0.{2 + index}"),
                    *("--handshake-timeout", str(min(30.0, args.max_seconds))),
                    *("--idle-s", str(4 * args.max_seconds + 120)),
                    cores=placement.clients,
                    limit=1 << 26,
                )
            )
        connected = await _each(workers, "connected", args.max_seconds + 30)
    except BaseException:
        await close(workers)
        raise
    pods: dict[str, int] = {}
    errors: dict[str, int] = {}
    for result in connected:
        for pod, n in result["pods"].items():
            pods[pod] = pods.get(pod, 0) + n
        for kind, n in result["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    opened = sum(r["opened"] for r in connected)
    return workers, {"requested": count, "opened": opened, "errors": errors, "pods": pods}


async def _each(
    workers: list[asyncio.subprocess.Process], event: str, timeout_s: float, **command: Any
) -> list[dict[str, Any]]:
    """Send ``command`` (if any) to every worker, then read each one's ``event``."""
    if command:
        for worker in workers:
            await send(worker, **command)
    progress: dict[int, int] = {}
    return list(
        await asyncio.gather(
            *(read_event(w, event, progress, i, timeout_s) for i, w in enumerate(workers))
        )
    )


@dataclass
class Arrived:
    """What the raw subscribers received since their reset, over every worker."""

    complete: int  # connections with every publication waited for
    open: int
    by_text: dict[str, list[float]]  # text -> [count, first arrival, last arrival]
    client_cpu_s: float  # the workers' own CPU ...
    client_seconds: float  # ... over this long


async def arrivals(
    workers: list[asyncio.subprocess.Process], expect: int, deadline_s: float
) -> Arrived:
    """Once every connection has ``expect`` arrivals (or at the deadline)."""
    reports = await _each(
        workers, "arrivals", deadline_s + 30, cmd="wait", expect=expect, deadline_s=deadline_s
    )
    merged: dict[str, list[float]] = {}
    for report in reports:
        for text, (count, first, last) in report["by_text"].items():
            entry = merged.setdefault(text, [0, first, last])
            entry[0] += count
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)
    return Arrived(
        sum(r["complete"] for r in reports),
        sum(r["open"] for r in reports),
        merged,
        sum(r["cpu_s"] for r in reports),
        max(r["seconds"] for r in reports),
    )


async def warm_up(workers: list[asyncio.subprocess.Process], publish_one: Publish) -> int:
    """Publish until every connection got a publication (its server-side subscription is
    live), up to :data:`WARM_UP_TRIES` times; then forget it. Returns how many got it."""
    complete = 0
    for attempt in range(WARM_UP_TRIES):
        await publish_one(f"warm-up-{attempt}".ljust(TEXT_BYTES, "w"))
        got = await arrivals(workers, 1, WARM_UP_WAIT_S)
        complete = got.complete
        if got.complete >= got.open:
            break
    await _each(workers, "reset", 30, cmd="reset")
    return complete


def cpu_figures(
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
    seconds: float,
) -> dict[str, Any]:
    """Server CPU between two readings: in all, per process, and cores busy (a process
    gone before the second reading is left out: its CPU went with it)."""
    by_process = {
        role: round(after[role][1] - before[role][1], 3)
        for role in after
        if after[role][1] >= before[role][1]
    }
    total = round(sum(by_process.values()), 3)
    return {
        "server_cpu_s": total,
        "server_cores_busy": per(total, seconds),
        "cpu_s_by_process": dict(sorted(by_process.items(), key=lambda kv: -kv[1])),
    }


def client_figures(cpu_s: float, seconds: float, placement: Placement) -> dict[str, Any]:
    """How busy the client processes' cores were: near 100 %, the clients, not the
    servers, set the pace (and their queueing is in the latencies)."""
    cores = len(placement.clients) if placement.clients else os.cpu_count() or 1
    return {"client_cpu_s": round(cpu_s, 3), "client_cores_busy": per(cpu_s, seconds * cores)}


# -- scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pattern:
    """How publications come: how many, how fast, from how many publishers at once."""

    name: str
    publications: int
    rate: float
    publishers: int


def fanout_patterns(args: argparse.Namespace) -> list[Pattern]:
    """A busy channel (many publishers: publications that arrive together go out together,
    one socket write for several), and isolated publications (each one alone: every
    delivery pays its own write on both hops, the gateway's and Envoy's)."""
    return [
        Pattern("busy", args.fanout_publications, args.fanout_rate, args.fanout_publishers),
        Pattern("isolated", args.isolated_publications, args.isolated_rate, 1),
    ]


async def fanout(
    target: Target, publish_one: Publish, args: argparse.Namespace, placement: Placement
) -> dict[str, dict[str, Any]]:
    """``--fanout-connections`` subscribers; per :func:`fanout_patterns` pattern, how many
    deliveries per server CPU-second."""
    workers, connections = await open_subscribers(
        target, args.fanout_connections, FANOUT_CHANNEL, "f", args, placement
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        warmed = await warm_up(workers, publish_one)
        for pattern in fanout_patterns(args):
            before = usage(target.processes)
            sent = await concurrent(
                publish_one,
                pattern.publications,
                pattern.rate,
                lambda n, _at, name=pattern.name: f"{name}-{n:06d}-".ljust(TEXT_BYTES, "x"),
                args.max_seconds,
                pattern.publishers,
            )
            got = await arrivals(workers, len(sent), args.max_seconds)
            after = usage(target.processes)
            await _each(workers, "reset", 30, cmd="reset")
            results[pattern.name] = _fanout_figures(
                target, pattern, connections, warmed, sent, got, before, after, placement
            )
    finally:
        await close(workers)
    return results


def _fanout_figures(
    target: Target,
    pattern: Pattern,
    connections: dict[str, Any],
    warmed: int,
    sent: list[Sent],
    got: Arrived,
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
    placement: Placement,
) -> dict[str, Any]:
    arrived = [s for s in sent if s.text in got.by_text]
    delivered = sum(int(got.by_text[s.text][0]) for s in arrived)
    last = max((got.by_text[s.text][2] for s in arrived), default=0.0)
    seconds = last - sent[0].at if delivered else 0.0
    cpu = cpu_figures(before, after, seconds)
    return {
        "target": target.name,
        "pattern": pattern.name,
        "connections": connections,
        "warmed_up": warmed,
        "publications": len(sent),
        "rate_per_s": pattern.rate,
        "publishers": pattern.publishers,
        "publish_errors": sum(not s.ok for s in sent),
        "expected": len(sent) * connections["opened"],
        "delivered": delivered,
        "complete_connections": got.complete,
        "seconds": seconds,
        "deliveries_per_s": per(delivered, seconds),
        "deliveries_per_cpu_s": per(delivered, cpu["server_cpu_s"], MIN_CPU_S),
        **cpu,
        **client_figures(got.client_cpu_s, got.client_seconds, placement),
        "publish_to_last_arrival_s": summary(_to_last(sent, got)),
        "publish_call_s": summary([s.took for s in sent]),
    }


def _to_last(sent: list[Sent], got: Arrived) -> list[float]:
    """Per publication that arrived: its last arrival minus its send time."""
    return [got.by_text[s.text][2] - s.at for s in sent if s.text in got.by_text]


async def latency(
    target: Target, publish_one: Publish, args: argparse.Namespace, placement: Placement
) -> dict[str, Any]:
    """``--latency-subscribers`` subscribers: per publication, send -> last arrival."""
    workers, connections = await open_subscribers(
        target, args.latency_subscribers, LATENCY_CHANNEL, "l", args, placement
    )
    try:
        warmed = await warm_up(workers, publish_one)
        before = usage(target.processes)
        sent = await concurrent(  # one publisher: one after another, in order
            publish_one,
            args.latency_publications,
            args.latency_rate,
            latency_text,
            args.max_seconds,
            concurrency=1,
        )
        got = await arrivals(workers, len(sent), args.max_seconds)
        after = usage(target.processes)
    finally:
        await close(workers)
    opened = connections["opened"]
    return {
        "target": target.name,
        "connections": connections,
        "warmed_up": warmed,
        "publications": len(sent),
        "publish_errors": sum(not s.ok for s in sent),
        "rate_per_s": args.latency_rate,
        "subscribers_with_every_publication": got.complete,
        "publications_to_every_subscriber": sum(
            1 for s in sent if s.text in got.by_text and got.by_text[s.text][0] >= opened
        ),
        "to_last_subscriber_s": summary(_to_last(sent, got)),
        "to_first_subscriber_s": summary(
            [got.by_text[s.text][1] - s.at for s in sent if s.text in got.by_text]
        ),
        "target_p99_s": TARGETS["latency_p99_s"],
        "publish_call_s": summary([s.took for s in sent]),
        **cpu_figures(before, after, got.client_seconds),
        **client_figures(got.client_cpu_s, got.client_seconds, placement),
    }


# -- failover and presence -------------------------------------------------------------


async def sdk_subscribers(
    fleet: LocalFleet, args: argparse.Namespace, placement: Placement
) -> tuple[list[asyncio.subprocess.Process], dict[str, int]]:
    """SDK subscriber processes, once every client is subscribed; the pods they are on."""
    workers: list[asyncio.subprocess.Process] = []
    try:
        for index, share in enumerate(shares(args.failover_subscribers, args.clients)):
            workers.append(
                await processes.spawn(
                    *(sys.executable, "-m", "benchmarks.channel_workers", "sdk"),
                    *("--url", fleet.client_url, "--count", str(share)),
                    *("--channel", FAILOVER_CHANNEL, "--prefix", f"s{index}"),
                    *("--key-file", str(fleet.state_dir / "auth.key")),
                    *("--connect-timeout", str(args.max_seconds)),
                    *("--idle-s", str(4 * args.max_seconds + 120)),
                    cores=placement.clients,
                    limit=1 << 28,  # a report is one (large) JSON line
                )
            )
        connected = await _each(workers, "connected", args.max_seconds + 30)
    except BaseException:
        await close(workers)
        raise
    pods: dict[str, int] = {}
    for result in connected:
        for pod, n in result["pods"].items():
            pods[pod] = pods.get(pod, 0) + n
    return workers, pods


async def wait_quiet(target: Target, max_s: float) -> float:
    """Until the server processes keep less than :data:`QUIET_CORES` busy over a second
    (e.g. the joins announced to every subscriber are delivered), at most ``max_s``;
    returns how long that took."""
    started = time.perf_counter()
    for _ in range(int(max_s) + 1):
        before = usage(target.processes)
        await asyncio.sleep(1.0)
        if cpu_figures(before, usage(target.processes), 1.0)["server_cpu_s"] < QUIET_CORES:
            break
    return time.perf_counter() - started


class PresenceWatch:
    """Polls the channel's presence from the kill until ``presence_stats`` counts exactly
    the live subscribers, and until the killed gateway's ghosts are gone from the
    ``presence`` listing (or until its deadline)."""

    def __init__(
        self, http: aiohttp.ClientSession, fleet: LocalFleet, live: int, live_ghosts: int
    ) -> None:
        self.http, self.fleet = http, fleet
        self.live, self.live_ghosts = live, live_ghosts
        self.samples: list[tuple[float, int]] = []  # (s after the kill, clients)
        self.matched_after_s: float | None = None
        self.ghosts_gone_after_s: float | None = None
        self.before_kill: int | None = None  # clients just before the kill (all should be)

    async def _call(self, method: str) -> dict[str, Any]:
        async with self.http.post(
            f"{self.fleet.api_url}/{method}",
            data=json.dumps({"channel": FAILOVER_CHANNEL}),
            headers={"Authorization": f"Bearer {self.fleet.api_key}"},
        ) as response:
            answer: dict[str, Any] = await response.json(content_type=None)
            return answer

    async def read_before_kill(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            self.before_kill = int((await self._call("presence_stats")).get("clients", -1))

    async def _poll(self, killed_at: float) -> None:
        if self.matched_after_s is None:
            clients = int((await self._call("presence_stats")).get("clients", -1))
            after = time.perf_counter() - killed_at
            self.samples.append((after, clients))
            if clients == self.live:
                self.matched_after_s = after
        if self.ghosts_gone_after_s is None:
            entries = (await self._call("presence")).get("clients", [])
            ghosts = sum(1 for e in entries if str(e.get("user", "")).startswith(GHOST_PREFIX))
            if ghosts == self.live_ghosts:
                self.ghosts_gone_after_s = time.perf_counter() - killed_at

    async def run(self, killed_at: float, deadline_s: float) -> None:
        deadline = time.monotonic() + deadline_s
        for _ in range(int(deadline_s / PRESENCE_POLL_S) + 1):
            if time.monotonic() > deadline or None not in (
                self.matched_after_s,
                self.ghosts_gone_after_s,
            ):
                return
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                await self._poll(killed_at)  # (no answer: the next poll may have one)
            await asyncio.sleep(PRESENCE_POLL_S)

    def figures(self, ttl_s: float, ghosts: dict[str, int]) -> dict[str, Any]:
        bound = ttl_s + ttl_s / 3  # the TTL plus one refresh period
        seen = [c for _, c in self.samples if c >= 0]
        return {
            "ttl_s": ttl_s,
            "bound_s": bound,
            "live_subscribers": self.live,
            "ghosts": ghosts,
            "matched": self.matched_after_s is not None,
            "matched_after_kill_s": self.matched_after_s,
            # the target: the killed gateway's entries gone within the TTL (plus a refresh),
            # and presence matching the live subscribers once they are back (when that is
            # depends on how fast the moved ones reconnect: matched_after_kill_s)
            "within_bound": self.matched_after_s is not None
            and self.ghosts_gone_after_s is not None
            and self.ghosts_gone_after_s <= bound,
            # fewer than every subscriber before the kill: entries were lost before it, and
            # a quick match says nothing about the killed gateway's entries expiring
            "clients_before_kill": self.before_kill,
            "killed_gateway_ghosts_gone_after_s": self.ghosts_gone_after_s,
            "first_clients_seen": seen[0] if seen else None,
            "max_clients_seen": max(seen, default=None),
            "min_clients_seen": min(seen, default=None),
            "polls": len(self.samples),
        }


async def failover(
    fleet: LocalFleet,
    http: aiohttp.ClientSession,
    args: argparse.Namespace,
    placement: Placement,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SDK subscribers of ``chat:failover`` (and raw "ghosts", which never come back)
    while a gateway is SIGKILLed mid-stream; then what the SDK subscribers received, and
    when presence matched the live subscribers again."""
    target = fleet_target(fleet)
    ghosts, ghost_facts = await open_subscribers(
        target, args.presence_ghosts, FAILOVER_CHANNEL, GHOST_PREFIX, args, placement, 1
    )
    workers: list[asyncio.subprocess.Process] = []
    watching: asyncio.Task[None] | None = None
    try:
        subscribing = time.perf_counter()
        workers, pods = await sdk_subscribers(fleet, args, placement)
        subscribed_s = time.perf_counter() - subscribing
        quiet_s = await wait_quiet(target, args.max_seconds)
        victim = max(pods, key=lambda pod: pods[pod])
        ghosts_lost = ghost_facts["pods"].get(victim, 0)
        live = sum(pods.values()) + ghost_facts["opened"] - ghosts_lost
        count = max(3, round(args.failover_rate * args.failover_seconds))
        kill_before = count // 3 + 1
        watch = PresenceWatch(http, fleet, live, ghost_facts["opened"] - ghosts_lost)
        killed: dict[str, float] = {}
        victim_at_kill: dict[str, tuple[float, float]] = {}  # its CPU, read just before

        async def kill_at_a_third(n: int) -> None:
            nonlocal watching
            if n == kill_before:
                await watch.read_before_kill()
                victim_at_kill.update(usage({victim: target.processes[victim]}))
                killed["at"] = time.perf_counter()
                await fleet.stop_sidecar(victim, sig=signal.SIGKILL)
                watching = asyncio.create_task(watch.run(killed["at"], 3 * args.presence_ttl + 10))

        await _each(workers, "reset", 30, cmd="reset")
        before = usage(target.processes)
        offsets: dict[str, int] = {}
        sent = await concurrent(
            offset_publisher(http, fleet, FAILOVER_CHANNEL, offsets),
            count,
            args.failover_rate,
            lambda n, _at: f"p{n}",
            args.max_seconds,
            args.failover_publishers,
            before=kill_at_a_third,
        )
        # the channel's order is its offsets' (publishers at once may cross each other)
        expected = sorted((s.text for s in sent if s.ok), key=lambda text: offsets[text])
        reports = await _each(
            workers,
            "collected",
            args.catch_up + 60,
            cmd="collect",
            expected=expected,
            deadline_s=args.catch_up,
        )
        after = usage(target.processes) | victim_at_kill
        if watching is not None:
            await watching
    finally:
        if watching is not None and not watching.done():
            watching.cancel()
        await close([*workers, *ghosts])
    if "at" not in killed:
        raise RuntimeError(f"the stream ended after {len(sent)} publications, before the kill")
    clients = [c for report in reports for c in report["clients"]]
    figures = _failover_figures(clients, sent, victim, pods, killed["at"], args)
    figures["all_subscribed_s"] = subscribed_s
    figures["then_servers_quiet_after_s"] = quiet_s  # joins announced to every subscriber
    seconds = max(r["seconds"] for r in reports)
    figures |= cpu_figures(before, after, seconds)
    figures |= client_figures(sum(r["cpu_s"] for r in reports), seconds, placement)
    ghost_counts = {"opened": ghost_facts["opened"], "on_killed_gateway": ghosts_lost}
    return figures, watch.figures(args.presence_ttl, ghost_counts)


def _failover_figures(
    clients: list[dict[str, Any]],
    sent: list[Sent],
    victim: str,
    pods: dict[str, int],
    killed_at: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    moved = [c for c in clients if c["pods"] and c["pods"][0] == victim]
    back = [_resubscribed_after(c, killed_at) for c in moved]
    ok = [s for s in sent if s.ok]
    last_arrival = max((c["last_arrival"] for c in clients), default=0.0)
    return {
        "subscribers": len(clients),
        "pods_at_start": pods,
        "killed_gateway": victim,
        "on_killed_gateway": len(moved),
        "publications": len(ok),
        "publish_errors": len(sent) - len(ok),
        "killed_before_publication": sum(s.at < killed_at for s in sent) + 1,
        "rate_asked_per_s": args.failover_rate,
        "rate_achieved_per_s": _rate(sent),
        "rate_achieved_before_kill_per_s": _rate([s for s in sent if s.at < killed_at]),
        "rate_achieved_after_kill_per_s": _rate([s for s in sent if s.at > killed_at]),
        "killed_after_s": killed_at - sent[0].at if sent else None,
        "publish_call_s": summary([s.took for s in sent]),
        "exact": sum(bool(c["exact"]) for c in clients),
        "duplicates": sum(c["duplicates"] for c in clients),
        "gaps": sum(c["gaps"] for c in clients),
        "out_of_order": sum(c["out_of_order"] for c in clients),
        "extras": sum(c["extras"] for c in clients),
        "subscribers_with_a_gap": sum(1 for c in clients if c["gaps"]),
        "sdk_gap_resubscribes": sum(c["sdk_gaps"] for c in clients),
        "recovered_subscribes": sum(c["recovered"] for c in clients),
        "not_recovered_subscribes": sum(c["not_recovered"] for c in clients),
        "reconnected_not_on_killed_gateway": sum(
            1 for c in clients if len(c["pods"]) > 1 and c["pods"][0] != victim
        ),
        "resumed_sessions": sum(1 for c in moved if c["resumes"]),
        "moved_not_resubscribed": sum(1 for t in back if t is None),
        "kill_to_resubscribed_s": summary([t for t in back if t is not None]),
        "kill_to_every_moved_resubscribed_s": (
            max(t for t in back if t is not None) if back and None not in back else None
        ),
        "last_publication_to_last_arrival_s": last_arrival - ok[-1].at if ok else None,
    }


def _rate(sent: list[Sent]) -> float | None:
    """Publications per second from the first to the last of ``sent``."""
    return per(len(sent) - 1, sent[-1].at - sent[0].at) if len(sent) > 1 else None


def _resubscribed_after(client: dict[str, Any], killed_at: float) -> float | None:
    later = [t for t in client["subscribed_at"] if t > killed_at]
    return min(later) - killed_at if later else None


# -- report ----------------------------------------------------------------------------


def _busy(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _top(cpu_s_by_process: dict[str, float]) -> str:
    return ", ".join(f"{name} {cpu:.2f}" for name, cpu in list(cpu_s_by_process.items())[:3])


Row = dict[str, Any]
FANOUT_COLUMNS: dict[str, Callable[[Row], Any]] = {
    "pattern": lambda r: f"{r['pattern']} ({r['publishers']} x, {r['rate_per_s']:g}/s)",
    "target": lambda r: r["target"],
    "conns": lambda r: r["connections"]["opened"],
    "delivered": lambda r: f"{r['delivered']}/{r['expected']}",
    "deliveries/s": lambda r: r["deliveries_per_s"],
    "server CPU s": lambda r: r["server_cpu_s"],
    "per CPU-s": lambda r: r["deliveries_per_cpu_s"],
    "clients busy": lambda r: _busy(r["client_cores_busy"]),
    "top CPU s": lambda r: _top(r["cpu_s_by_process"]),
}
LATENCY_COLUMNS: dict[str, Callable[[Row], Any]] = {
    "target": lambda r: r["target"],
    "subscribers": lambda r: r["connections"]["opened"],
    "pubs": lambda r: r["publications"],
    "subs with all": lambda r: r["subscribers_with_every_publication"],
    "p50 ms": lambda r: ms(r["to_last_subscriber_s"]["p50"]),
    "p99 ms": lambda r: ms(r["to_last_subscriber_s"]["p99"]),
    "max ms": lambda r: ms(r["to_last_subscriber_s"]["max"]),
    "first p50 ms": lambda r: ms(r["to_first_subscriber_s"]["p50"]),
    "call p50 ms": lambda r: ms(r["publish_call_s"]["p50"]),
    "servers busy": lambda r: _busy(r["server_cores_busy"]),
    "clients busy": lambda r: _busy(r["client_cores_busy"]),
}
FAILOVER_COLUMNS: dict[str, Callable[[Row], Any]] = {
    "subs": lambda r: r["subscribers"],
    "on killed": lambda r: r["on_killed_gateway"],
    "pubs": lambda r: r["publications"],
    "pubs/s": lambda r: r["rate_achieved_per_s"],
    "exact": lambda r: f"{r['exact']}/{r['subscribers']}",
    "dups": lambda r: r["duplicates"],
    "gaps": lambda r: r["gaps"],
    "out of order": lambda r: r["out_of_order"],
    "not recovered": lambda r: r["not_recovered_subscribes"],
    "all back s": lambda r: r["kill_to_every_moved_resubscribed_s"],
    "servers busy": lambda r: _busy(r["server_cores_busy"]),
    "clients busy": lambda r: _busy(r["client_cores_busy"]),
}
PRESENCE_COLUMNS: dict[str, Callable[[Row], Any]] = {
    "live": lambda r: r["live_subscribers"],
    "before kill": lambda r: r["clients_before_kill"],
    "TTL s": lambda r: r["ttl_s"],
    "matched": lambda r: r["matched"],
    "after kill s": lambda r: r["matched_after_kill_s"],
    "bound s": lambda r: r["bound_s"],
    "gone within": lambda r: r["within_bound"],
    "ghosts gone s": lambda r: r["killed_gateway_ghosts_gone_after_s"],
    "max seen": lambda r: r["max_clients_seen"],
    "min seen": lambda r: r["min_clients_seen"],
}


def _table(title: str, columns: dict[str, Callable[[Row], Any]], rows: list[Row]) -> str:
    return f"{title}\n" + table(
        [[get(row) for get in columns.values()] for row in rows], list(columns)
    )


def _readable(figures: dict[str, Any]) -> str:
    sections = []
    if "fanout" in figures:
        fan = figures["fanout"]
        sections.append(
            _table(
                f"fan-out: publications of {TEXT_BYTES} bytes",
                FANOUT_COLUMNS,
                [fan[p][t] for p in fan for t in ("wsfleet", "bare")],
            )
            + "".join(
                f"\nwsfleet / bare deliveries per CPU-s, {name}: "
                f"{fmt_ratio(fan[name]['ratio_per_cpu_s'])}"
                for name in fan
            )
            + f" (target >= {TARGETS['fanout_ratio']}x, busy)"
        )
    if "latency" in figures:
        sections.append(
            _table(
                "latency: publish -> last subscriber",
                LATENCY_COLUMNS,
                [figures["latency"]["wsfleet"], figures["latency"]["bare"]],
            )
            + f"\n(target p99 < {ms(TARGETS['latency_p99_s']):.0f} ms)"
        )
    if "failover" in figures:
        sections.append(
            _table(
                "SIGKILL of a gateway under a stream (SDK subscribers)",
                FAILOVER_COLUMNS,
                [figures["failover"]],
            )
        )
        sections.append(_table("presence after the kill", PRESENCE_COLUMNS, [figures["presence"]]))
    sections.append(
        f"pinned: {'clients on core 0, servers on core 1' if figures['pinned'] else 'no'}"
    )
    return "\n\n".join(sections)


def _targets_met(figures: dict[str, Any]) -> dict[str, bool | None]:
    met: dict[str, bool | None] = {}
    if "fanout" in figures:
        fan = figures["fanout"]["busy"]["ratio_per_cpu_s"]
        met["fanout"] = None if fan is None else fan >= TARGETS["fanout_ratio"]
    if "latency" in figures:
        lat = figures["latency"]["wsfleet"]["to_last_subscriber_s"]
        met["latency"] = lat["p99"] is not None and lat["p99"] < TARGETS["latency_p99_s"]
    if "failover" in figures:
        fo = figures["failover"]
        met["failover"] = fo["exact"] == fo["subscribers"] > 0
        met["presence"] = bool(figures["presence"]["within_bound"])
    return met


# -- main ------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    placement = Placement.from_args(args)
    if args.pin:
        processes.check_pinning()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    with (
        processes.own_affinity(placement.clients),
        tempfile.TemporaryDirectory(prefix="wsfleet-channels-") as tmp,
    ):
        async with aiohttp.ClientSession(timeout=timeout) as http:
            only = set(args.only)
            bare_fanout: dict[str, Any] = {}
            bare_latency: dict[str, Any] = {}
            if only & {"fanout", "latency"}:
                bare = await start_bare_server(Path(tmp) / "bare", False, placement.servers)
                try:
                    if "fanout" in only:
                        bare_fanout = await fanout(
                            bare, bare_publisher(http, bare), args, placement
                        )
                        await asyncio.sleep(args.settle)
                    if "latency" in only:
                        bare_latency = await latency(
                            bare, bare_publisher(http, bare), args, placement
                        )
                finally:
                    assert bare.stop is not None
                    await bare.stop()
            fleet = await start_fleet(Path(tmp) / "fleet", args, placement)
            sections: dict[str, Any] = {}
            try:
                target = fleet_target(fleet)
                target.pin(placement.servers)
                affinity = target.affinity()
                if "fanout" in only:
                    await asyncio.sleep(args.settle)
                    ours = await fanout(
                        target, api_publisher(http, fleet, FANOUT_CHANNEL), args, placement
                    )
                    sections["fanout"] = _fanout_section(ours, bare_fanout)
                if "latency" in only:
                    await asyncio.sleep(args.settle)
                    lat = await latency(
                        target, api_publisher(http, fleet, LATENCY_CHANNEL), args, placement
                    )
                    sections["latency"] = {"wsfleet": lat, "bare": bare_latency}
                if "failover" in only:
                    await asyncio.sleep(args.settle)
                    sections["failover"], sections["presence"] = await failover(
                        fleet, http, args, placement
                    )
            finally:
                await fleet.stop()
    figures: dict[str, Any] = {
        "pinned": args.pin,
        "cores": {
            "clients": sorted(placement.clients) if placement.clients else None,
            "servers": sorted(placement.servers) if placement.servers else None,
        },
        "server_affinity": affinity,
        "options": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("output_dir", "name")
        },
        **sections,
    }
    figures["targets_met"] = _targets_met(figures)
    publish("channels", figures, _readable(figures), args.output_dir)


def _fanout_section(ours: dict[str, Any], bare: dict[str, Any]) -> dict[str, Any]:
    return {
        pattern: {
            "wsfleet": ours[pattern],
            "bare": bare[pattern],
            "ratio_per_cpu_s": ratio(
                ours[pattern]["deliveries_per_cpu_s"], bare[pattern]["deliveries_per_cpu_s"]
            ),
        }
        for pattern in ours
    }


SMOKE: dict[str, Any] = {
    "fanout_connections": 300,  # 9,000 deliveries: enough CPU for the bare server's figure
    "fanout_publications": 30,
    "fanout_rate": 50.0,
    "isolated_publications": 10,
    "isolated_rate": 20.0,
    "latency_subscribers": 60,
    "latency_publications": 5,
    "latency_rate": 10.0,
    "failover_subscribers": 40,
    "failover_rate": 50.0,
    "failover_seconds": 3.0,
    "presence_ttl": 3.0,
    "presence_ghosts": 6,
    "clients": 2,
    "settle": 0.5,
    "max_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS,
        default=list(SCENARIOS),
        help="the scenarios to run (default: all)",
    )
    parser.add_argument(
        "--catch-up",
        type=positive_float,
        default=CATCH_UP_S,
        help="after the failover stream, how long subscribers may take to have everything",
    )
    parser.add_argument("--fanout-connections", type=positive_int, default=3000)
    parser.add_argument("--fanout-publications", type=positive_int, default=200)
    parser.add_argument(
        "--fanout-rate", type=positive_float, default=200.0, help="publications/s (a busy channel)"
    )
    parser.add_argument(
        "--fanout-publishers",
        type=positive_int,
        default=8,
        help="publishers at once (1 and a low rate: each publication alone, the costliest case)",
    )
    parser.add_argument(
        "--isolated-publications",
        type=positive_int,
        default=20,
        help="publications one at a time, at --isolated-rate (each delivered alone)",
    )
    parser.add_argument("--isolated-rate", type=positive_float, default=10.0)
    parser.add_argument("--latency-subscribers", type=positive_int, default=8000)
    parser.add_argument("--latency-publications", type=positive_int, default=50)
    parser.add_argument("--latency-rate", type=positive_float, default=5.0, help="publications/s")
    parser.add_argument("--failover-subscribers", type=positive_int, default=1000)
    parser.add_argument("--failover-rate", type=positive_float, default=200.0, help="pubs/s")
    parser.add_argument("--failover-seconds", type=positive_float, default=10.0)
    parser.add_argument(
        "--failover-publishers",
        type=positive_int,
        default=8,
        help="publishers at once (the order the subscribers must see is the channel's)",
    )
    parser.add_argument(
        "--presence-ttl", type=positive_float, default=10.0, help="the gateways' presence TTL, s"
    )
    parser.add_argument(
        "--presence-ghosts",
        type=positive_int,
        default=20,
        help="raw subscribers of the failover channel that never come back after the kill"
        " (SDK clients resume their sessions: only these show the killed gateway's entries expire)",
    )
    parser.add_argument("--sidecars", type=positive_int, default=2, help="gateways (at least 2)")
    parser.add_argument(
        "--policy",
        type=Path,
        default=POLICY,
        help="the fleet's routing policy: its feed and bench namespaces decide history,"
        " presence and joins (default: benchmarks/channels_policy.yaml)",
    )
    parser.add_argument(
        "--clients", type=positive_int, default=4, help="client processes per scenario (<= 250)"
    )
    parser.add_argument(
        "--settle", type=non_negative_float, default=2.0, help="seconds between scenarios"
    )
    parser.add_argument(
        "--max-seconds", type=positive_float, default=300.0, help="a bound on every phase"
    )
    parser.add_argument(
        "--pin", action="store_true", help="clients on core 0, every server process on core 1"
    )


def check_arguments(args: argparse.Namespace) -> str | None:
    if args.pin:
        try:
            processes.check_pinning()
        except SystemExit as refused:
            return str(refused)
    if args.sidecars < 2:
        return "--sidecars: at least 2 (one is killed, the others take its subscribers)"
    if args.clients > 250:
        return f"--clients {args.clients}: at most 250 (one source address 127.0.0.N each)"
    smallest = min(args.fanout_connections, args.latency_subscribers, args.failover_subscribers)
    if args.clients > smallest:
        return f"--clients {args.clients} is more than the smallest scenario ({smallest})"
    largest = max(args.fanout_connections, args.latency_subscribers, args.failover_subscribers)
    if -(-largest // args.clients) > MAX_PER_PROCESS:
        return f"{largest} sockets over {args.clients} processes: over {MAX_PER_PROCESS} each"
    return None
