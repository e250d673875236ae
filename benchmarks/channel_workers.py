"""Subscribers for the channels benchmark (benchmarks/channels.py), in a process of their
own so that no process holds more sockets than its file limit. JSON lines on stdout,
commands on stdin.

``python -m benchmarks.channel_workers raw --url U --count N [--channel C] ...``: N raw
WebSockets (no subprotocol) whose tokens subscribe them to C server-side (the ``subs``
claim); each publication arrives as a bare text message. Every connection counts its
arrivals, and every distinct text its count and first and last arrival
(``time.perf_counter()``: CLOCK_MONOTONIC, comparable across processes).

- ``{"event": "connected", "opened", "errors": {kind: n}, "pods": {pod: n}}`` once;
- on ``{"cmd": "reset"}``: forget the arrivals so far, ``{"event": "reset"}``;
- on ``{"cmd": "wait", "expect": k, "deadline_s": d}``: once every open connection has k
  arrivals since the reset (or after d seconds): ``{"event": "arrivals", "complete",
  "open", "by_text": {text: [count, first, last]}, "cpu_s", "seconds"}`` (this process's
  CPU and the time since the reset).

``python -m benchmarks.channel_workers sdk --url U --count N --channel C ...``: N Python
SDK clients (protocol v1 over WebSocket), each ``client.subscribe(C)``, keeping the data
of every publication in order and the time of every ``subscribed``.

- ``{"event": "connected", "count", "pods": {pod: n}}`` once all are subscribed;
- on ``{"cmd": "reset"}``: ``{"event": "reset"}`` (CPU is counted from here);
- on ``{"cmd": "collect", "expected": [data...], "deadline_s": d}``: once every client
  has as many publications as expected or the last one (or after d seconds), one line
  ``{"event": "collected", "clients": [...], "cpu_s", "seconds"}`` with each client's
  pods, subscribe times, and how its publications differ from the expected ones (see
  :func:`faults`), and this process's CPU and the time since ``connected`` or the
  last reset.

Both exit on ``{"cmd": "close"}``, when stdin closes or after ``--idle-s`` without a
command. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from benchmarks.worker_pipe import commands, say
from wsfleet.headers import POD_HEADER
from wsfleet.tokens import mint_token, read_auth_key
from wsfleet_client import Subscription
from wsfleet_client.client import Client

POLL_S = 0.02  # how often a wait looks at the counts (arrival times are taken on arrival)
CLOSE_TIMEOUT_S = 20.0


async def wait_until(done: Callable[[], bool], deadline_s: float) -> None:
    """Until ``done()`` or ``deadline_s`` (looked at every :data:`POLL_S`)."""
    deadline = time.monotonic() + deadline_s
    for _ in range(int(deadline_s / POLL_S) + 1):
        if done() or time.monotonic() >= deadline:
            return
        await asyncio.sleep(POLL_S)


# -- raw WebSocket subscribers ---------------------------------------------------------


class Arrivals:
    """What the raw connections received since the last reset."""

    def __init__(self) -> None:
        self.counts: list[int] = []  # per connection
        self.by_text: dict[str, list[float]] = {}  # text -> [count, first, last]
        self.cpu_since = time.process_time()  # this process's CPU since the reset ...
        self.wall_since = time.perf_counter()  # ... and the time

    def add_connection(self) -> int:
        self.counts.append(0)
        return len(self.counts) - 1

    def arrived(self, index: int, text: str) -> None:
        now = time.perf_counter()
        self.counts[index] += 1
        entry = self.by_text.get(text)
        if entry is None:
            self.by_text[text] = [1, now, now]
        else:
            entry[0] += 1
            entry[2] = now

    def reset(self) -> None:
        self.counts = [0] * len(self.counts)
        self.by_text = {}
        self.cpu_since, self.wall_since = time.process_time(), time.perf_counter()


async def read_raw(ws: aiohttp.ClientWebSocketResponse, index: int, arrivals: Arrivals) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.TEXT:
            arrivals.arrived(index, message.data)


async def run_raw(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file) if args.key_file else None
    claims = {"subs": [args.channel]} if args.channel else None
    connector = aiohttp.TCPConnector(
        limit=0, force_close=True, local_addr=(args.source_ip, 0) if args.source_ip else None
    )
    arrivals = Arrivals()
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    readers: list[asyncio.Task[None]] = []
    errors: dict[str, int] = {}
    pods: dict[str, int] = {}
    gate = asyncio.Semaphore(args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def open_one(n: int) -> None:
            user = f"{args.prefix}-{n}"
            token = mint_token(key, user, extra_claims=claims) if key else ""
            async with gate:
                try:
                    ws = await asyncio.wait_for(
                        session.ws_connect(
                            f"{args.url}?user={user}",
                            headers={"Authorization": f"Bearer {token}"} if token else {},
                            timeout=aiohttp.ClientWSTimeout(ws_close=1),
                        ),
                        args.handshake_timeout,
                    )
                except aiohttp.WSServerHandshakeError as refused:
                    errors[f"HTTP {refused.status}"] = errors.get(f"HTTP {refused.status}", 0) + 1
                    return
                except Exception as exc:  # counted by kind, never raised
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    return
            pod = ws._response.headers.get(POD_HEADER, "") if ws._response else ""
            pods[pod] = pods.get(pod, 0) + 1
            sockets.append(ws)
            readers.append(asyncio.create_task(read_raw(ws, arrivals.add_connection(), arrivals)))

        await asyncio.gather(*(open_one(n) for n in range(args.count)))
        say(event="connected", opened=len(sockets), errors=errors, pods=pods)

        async def handle(command: dict[str, Any]) -> None:
            if command["cmd"] == "reset":
                arrivals.reset()
                say(event="reset")
            elif command["cmd"] == "wait":
                expect = int(command["expect"])

                def complete() -> int:
                    return sum(
                        count >= expect
                        for count, ws in zip(arrivals.counts, sockets, strict=True)
                        if not ws.closed
                    )

                def all_open_complete() -> bool:
                    return complete() >= sum(not ws.closed for ws in sockets)

                await wait_until(all_open_complete, float(command["deadline_s"]))
                say(
                    event="arrivals",
                    complete=complete(),
                    open=sum(not ws.closed for ws in sockets),
                    by_text=arrivals.by_text,
                    cpu_s=time.process_time() - arrivals.cpu_since,
                    seconds=time.perf_counter() - arrivals.wall_since,
                )

        try:
            await commands(args.idle_s, handle, "channel_workers")
        finally:
            for task in readers:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True),
                    CLOSE_TIMEOUT_S,
                )


# -- SDK subscribers -------------------------------------------------------------------


def faults(got: Sequence[str], expected: Sequence[str]) -> dict[str, Any]:
    """How ``got`` differs from ``expected`` (distinct items, in order): ``duplicates``
    (items received more than once), ``gaps`` (expected items never received), ``extras``
    (items not expected), ``out_of_order`` (first arrivals that came after a later item)."""
    place = {item: n for n, item in enumerate(expected)}
    seen: set[str] = set()
    out_of_order = extras = 0
    latest = -1
    for item in got:
        if item not in place:
            extras += 1
            continue
        if item in seen:
            continue
        seen.add(item)
        if place[item] < latest:
            out_of_order += 1
        latest = max(latest, place[item])
    known = sum(item in place for item in got)
    return {
        "exact": list(got) == list(expected),
        "received": len(got),
        "duplicates": known - len(seen),
        "gaps": len(expected) - len(seen),
        "extras": extras,
        "out_of_order": out_of_order,
    }


class Follower:
    """One SDK client following one channel: the publications' data in order, the time
    of each ``subscribed`` and of the last publication."""

    def __init__(self, client: Client, subscription: Subscription) -> None:
        self.client = client
        self.subscription = subscription
        self.data: list[str] = []
        self.subscribed_at: list[float] = []
        self.last_arrival = 0.0
        subscription.on_subscribed = lambda _recovered: self.subscribed_at.append(
            time.perf_counter()
        )

    async def follow(self) -> None:
        async for publication in self.subscription:
            self.data.append(str(publication.data))
            self.last_arrival = time.perf_counter()

    def has_all(self, expected: Sequence[str]) -> bool:
        """As many publications as expected, or the last one (in order: nothing more will
        come, even after a gap)."""
        return len(self.data) >= len(expected) or (
            bool(self.data) and bool(expected) and self.data[-1] == expected[-1]
        )

    def report(self, expected: Sequence[str]) -> dict[str, Any]:
        stats = self.subscription.stats
        return {
            **faults(self.data, expected),
            "pods": self.client.stats.pods,
            "resumes": self.client.stats.resumes,
            "subscribed_at": self.subscribed_at,
            "last_arrival": self.last_arrival,
            "recovered": stats.recovered,
            "not_recovered": stats.not_recovered,
            "sdk_gaps": stats.gaps,
            "sdk_duplicates": stats.duplicates,
            "dropped": stats.dropped,
        }


async def run_sdk(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        followers: list[Follower] = []
        for n in range(args.count):
            user = f"{args.prefix}-{n}"
            client = Client(
                args.url, user, mint_token(key, user), transports=("websocket",), session=session
            )
            client.start()
            followers.append(Follower(client, client.subscribe(args.channel)))
        readers = [asyncio.create_task(f.follow()) for f in followers]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(f.subscription.subscribed.wait() for f in followers)),
                args.connect_timeout,
            )
            pods: dict[str, int] = {}
            for follower in followers:
                pod = follower.client.pod or ""
                pods[pod] = pods.get(pod, 0) + 1
            say(event="connected", count=len(followers), pods=pods)
            since = [time.process_time(), time.perf_counter()]

            async def handle(command: dict[str, Any]) -> None:
                if command["cmd"] == "reset":
                    since[:] = [time.process_time(), time.perf_counter()]
                    say(event="reset")
                elif command["cmd"] == "collect":
                    expected = list(command["expected"])
                    await wait_until(
                        lambda: all(f.has_all(expected) for f in followers),
                        float(command["deadline_s"]),
                    )
                    say(
                        event="collected",
                        clients=[f.report(expected) for f in followers],
                        cpu_s=time.process_time() - since[0],
                        seconds=time.perf_counter() - since[1],
                    )

            await commands(args.idle_s, handle, "channel_workers")
        finally:
            for task in readers:
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(f.client.close() for f in followers), return_exceptions=True),
                    CLOSE_TIMEOUT_S,
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    raw = kinds.add_parser("raw", help="raw WebSockets subscribed by their token")
    raw.add_argument("--channel", help="subscribed by the token's subs claim")
    raw.add_argument("--key-file", type=Path)
    raw.add_argument("--source-ip", help="e.g. 127.0.0.2: spreads client ports over addresses")
    raw.add_argument("--concurrency", type=int, default=100, help="handshakes in flight")
    raw.add_argument("--handshake-timeout", type=float, default=30.0)
    sdk = kinds.add_parser("sdk", help="Python SDK clients following one channel")
    sdk.add_argument("--channel", required=True)
    sdk.add_argument("--key-file", type=Path, required=True)
    sdk.add_argument("--connect-timeout", type=float, default=120.0)
    for sub in (raw, sdk):
        sub.add_argument("--url", required=True)
        sub.add_argument("--count", type=int, required=True)
        sub.add_argument("--prefix", default="sub")
        sub.add_argument("--idle-s", type=float, default=900.0)
    args = parser.parse_args()
    uvloop.run(run_raw(args) if args.kind == "raw" else run_sdk(args))


if __name__ == "__main__":
    main()
