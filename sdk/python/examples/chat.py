"""Type lines, see replies; survives drains and pod kills (run `wsfleet up` first).

python sdk/python/examples/chat.py alice
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

from wsfleet_client.client import Client


def local_token(user: str) -> str:
    return subprocess.check_output(["wsfleet", "token", "--user", user], text=True).strip()


async def main(user: str) -> None:
    token = local_token(user)
    url = "ws://127.0.0.1:8080/ws"
    async with Client(url, user, token, on_resync=lambda: print("(resync)")) as client:
        loop = asyncio.get_running_loop()

        async def show() -> None:
            async for message in client:
                print(f"< [{message.seq}] {message.data}  ({client.transport} on {client.pod})")

        printer = asyncio.create_task(show())
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            await client.send(line.rstrip("\n"))
        printer.cancel()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "alice"))
