"""A process of Python SDK clients for the chaos benchmark: they connect, each asks for a
stream, and keep what they receive and when they tried to (re)connect. JSON lines:
``{"event": "connected", "count": n}``, then, on ``{"cmd": "report"}`` (once every stream
has ended or the deadline passed), one report with every client's figures. Every wait is
bounded: connecting (``--connect-timeout``), each stream (its length plus
``--stream-deadline``), the report command (``--idle-s``) and closing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import time
from pathlib import Path

import aiohttp
import uvloop

from wsfleet.tokens import mint_token, read_auth_key
from wsfleet_client import Backoff
from wsfleet_client.client import Client


def say(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    key = read_auth_key(args.key_file)
    offset = time.time() - time.monotonic()  # attempt times in wall-clock seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = []
        for n in range(args.count):
            user = f"{args.prefix}-{n}"
            client = Client(
                args.url,
                user,
                mint_token(key, user),
                session=session,
                backoff=Backoff(base_s=args.backoff_base, cap_s=5.0),
            )
            client.start()
            clients.append(client)
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.connected.wait() for c in clients)), args.connect_timeout
            )
        except TimeoutError:
            connected = sum(c.connected.is_set() for c in clients)
            sys.stderr.write(
                f"sdk_workers: only {connected} of {len(clients)} clients connected within"
                f" {args.connect_timeout:g} s\n"
            )
            raise
        gc.freeze()
        for client in clients:
            await client.send(f"/stream {args.stream} {args.interval_ms}")
        say(event="connected", count=len(clients))

        async def collect(client: Client) -> list[str]:
            got: list[str] = []
            async for message in client:
                got.append(str(message.data))
                if len(got) >= args.stream:
                    break
            return got

        deadline = args.stream * args.interval_ms / 1000 + args.stream_deadline
        readers = [asyncio.create_task(asyncio.wait_for(collect(c), deadline)) for c in clients]
        received = await asyncio.gather(*readers, return_exceptions=True)
        expected = [f"stream-{n}" for n in range(1, args.stream + 1)]
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        with contextlib.suppress(TimeoutError):  # report anyway: the parent may be gone
            await asyncio.wait_for(stdin.readline(), args.idle_s)
        say(
            event="report",
            clients=[
                {
                    "exact": got == expected if isinstance(got, list) else False,
                    "received": len(got) if isinstance(got, list) else 0,
                    "pods": client.stats.pods,
                    "attempts": [t + offset for t in client.stats.attempted_at],
                    "failures": client.stats.failures,
                    "errors": client.stats.errors,
                }
                for client, got in zip(clients, received, strict=True)
            ],
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(client.close() for client in clients)), 30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", default="chaos")
    parser.add_argument("--stream", type=int, default=30)
    parser.add_argument("--interval-ms", type=int, default=1000)
    parser.add_argument("--backoff-base", type=float, default=0.5)
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--stream-deadline", type=float, default=120.0)
    parser.add_argument("--idle-s", type=float, default=900.0)
    uvloop.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
