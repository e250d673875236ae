"""``python -m examples.chat``: the chat's backend (gRPC, for the gateways) and its page
(HTTP, for browsers), in one process, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import structlog

from examples.chat.backend import ChatBackend
from examples.chat.page import page_app
from wsfleet import logs
from wsfleet.arg_types import port
from wsfleet.backend import start
from wsfleet.process_shell import listen
from wsfleet.readiness import write_ready
from wsfleet.stop_signals import signal_events
from wsfleet.tokens import read_auth_key

log = structlog.get_logger()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m examples.chat", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=port, default=0, help="for the gateways (--backend)")
    parser.add_argument("--http-port", type=port, default=8082, help="the page")
    parser.add_argument("--client-url", default="ws://127.0.0.1:8080/ws", help="Envoy's /ws")
    parser.add_argument("--auth-key-file", type=Path, default=Path(".wsfleet/auth.key"))
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--log-level", default="info")
    return parser


async def serve(args: argparse.Namespace) -> None:
    stop, _ = signal_events()
    key = read_auth_key(args.auth_key_file)
    async with contextlib.AsyncExitStack() as stack:
        server, grpc_port = await start(ChatBackend(), args.host, args.grpc_port)
        stack.push_async_callback(server.stop, 1.0)
        http_port = await listen(stack, page_app(args.client_url, key), args.host, args.http_port)
        write_ready(args.ready_file, port=grpc_port, http_port=http_port)
        log.info("chat_started", grpc_port=grpc_port, page=f"http://{args.host}:{http_port}/")
        await stop.wait()


def main() -> None:
    args = parser().parse_args()
    logs.configure("chat", args.log_level)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
