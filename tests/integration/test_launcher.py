"""``wsfleet up`` as a user runs it: starts, stops cleanly, refuses bad input clearly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil
import pytest

from wsfleet_tools.launcher.ports import free_port, port_is_listening

pytestmark = pytest.mark.integration

WSFLEET = [sys.executable, "-m", "wsfleet_tools"]


def _up(tmp_path: Path, *extra: str) -> tuple[list[str], int, int]:
    port, admin_port = free_port(), free_port()
    argv = [
        *WSFLEET,
        "up",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        "--state-dir",
        str(tmp_path / "state"),
        *extra,
    ]
    return argv, port, admin_port


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in process.info["cmdline"] or ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited: only its parent has not reaped it)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running


def _still_running(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Polls until every process has exited; those still running after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (running := _running(processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return running


def _start_and_wait_up(argv: list[str], timeout_s: float = 60) -> subprocess.Popen[str]:
    launcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert launcher.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = launcher.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("wsfleet is up"):
            return launcher
    launcher.kill()
    raise AssertionError("fleet did not come up:\n" + "".join(seen[-30:]))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_the_launcher_stops_every_child_and_frees_every_port(tmp_path: Path, how: int) -> None:
    argv, port, admin_port = _up(tmp_path)
    launcher = _start_and_wait_up(argv)
    children = psutil.Process(launcher.pid).children(recursive=True)
    names = sorted(child.name() for child in children)
    assert len(children) >= 6, names  # redis, backend, xds, envoy, 2 sidecars
    assert port_is_listening("127.0.0.1", port)

    launcher.send_signal(how)
    output, _ = launcher.communicate(timeout=30)
    assert launcher.returncode == 0, output[-2000:]
    assert _still_running(children, timeout_s=30) == []
    assert not port_is_listening("127.0.0.1", port)
    assert not port_is_listening("127.0.0.1", admin_port)
    assert not (tmp_path / "state" / "run" / "redis").exists()


def test_a_killed_launcher_takes_its_children_with_it(tmp_path: Path) -> None:
    argv, _, _ = _up(tmp_path, "--sidecars", "1")
    launcher = _start_and_wait_up(argv)
    children = psutil.Process(launcher.pid).children(recursive=True)
    launcher.kill()
    launcher.wait(10)
    _, alive = psutil.wait_procs(children, timeout=30)
    assert [child.pid for child in alive if child.status() != "zombie"] == []


def _fails_in_one_line(argv: list[str], expected: str, tmp_path: Path) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wsfleet: error:")
    assert expected in lines[0], lines[0]
    assert _processes_mentioning(str(tmp_path)) == []


def test_an_unknown_flag_is_refused_in_one_line(tmp_path: Path) -> None:
    argv, _, _ = _up(tmp_path, "--bogus-flag")
    _fails_in_one_line(argv, "unrecognized arguments: --bogus-flag", tmp_path)


def test_a_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        argv = [
            *WSFLEET,
            "up",
            "--port",
            str(taken),
            "--admin-port",
            str(free_port()),
            "--state-dir",
            str(tmp_path / "state"),
        ]
        _fails_in_one_line(argv, f"port {taken} is already in use", tmp_path)


def test_a_missing_policy_file_is_refused_in_one_line(tmp_path: Path) -> None:
    argv, _, _ = _up(tmp_path, "--policy", str(tmp_path / "nope.yaml"))
    _fails_in_one_line(argv, "nope.yaml: policy file not found", tmp_path)


def test_an_invalid_policy_file_is_refused_with_its_line(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "listeners:\n"
        "  - name: public\n"
        "    port: 8080\n"
        "    routes: [ws]\n"
        "routes:\n"
        "  - name: ws\n"
        "    path_prefix: /ws\n"
        "    pool: nowhere\n"
        "pools:\n"
        "  - name: gateways\n"
    )
    argv, _, _ = _up(tmp_path, "--policy", str(policy))
    _fails_in_one_line(argv, "bad.yaml:8: routes.0.pool: unknown pool 'nowhere'", tmp_path)


def test_an_unreachable_redis_is_refused_in_one_line(tmp_path: Path) -> None:
    dead = free_port()
    argv, _, _ = _up(tmp_path, "--redis-url", f"redis://127.0.0.1:{dead}/0")
    _fails_in_one_line(argv, f"cannot reach Redis at redis://127.0.0.1:{dead}/0", tmp_path)


def test_token_without_a_state_dir_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [*WSFLEET, "token", "--user", "alice", "--state-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "run `wsfleet up` first" in result.stderr


def test_token_and_connect_reach_the_running_fleet(tmp_path: Path) -> None:
    argv, port, _ = _up(tmp_path, "--sidecars", "1")
    launcher = _start_and_wait_up(argv)
    try:
        state = str(tmp_path / "state")
        token = subprocess.run(
            [*WSFLEET, "token", "--user", "alice", "--state-dir", state],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        assert token.count(".") == 2  # a JWT
        chat = subprocess.run(
            [*WSFLEET, "connect", f"ws://127.0.0.1:{port}/ws", "--user", "alice", "--token", token],
            input="hello\nworld\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.splitlines() == ["< hello", "< world"]
        refused = subprocess.run(
            [*WSFLEET, "connect", f"ws://127.0.0.1:{port}/ws", "--user", "bob", "--token", token],
            input="",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert refused.returncode != 0
        assert "HTTP 403" in refused.stderr
        asyncio.run(_channels_through_the_cli(port, state))
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.communicate(timeout=30)
    assert os.path.exists(tmp_path / "state" / "auth.key")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WSFLEET, *args], capture_output=True, text=True, timeout=30)


async def _once_the_key_is_known(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI call's outcome once the API instance that answers knows a new key: each of
    the fleet's API instances reads the keys file again within 2 s of a change, so a call
    may meet one that has not yet (401) for a while."""
    for _ in range(100):
        outcome = _cli(*args)
        if "HTTP 401" not in outcome.stderr:
            return outcome
        await asyncio.sleep(0.1)
    return outcome


async def _channels_through_the_cli(port: int, state: str) -> None:
    """What `wsfleet up` prints is all a user needs: a token with channels, the server API
    through Envoy with the fleet's key, and publish / history / presence / apikey."""
    token = _cli("token", "--user", "carol", "--subs", "feed:cli", "--state-dir", state)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            f"ws://127.0.0.1:{port}/ws?user=carol",
            headers={"Authorization": f"Bearer {token.stdout.strip()}"},
        ) as ws,
    ):
        published = await asyncio.to_thread(
            _cli, "publish", "feed:cli", "hello from the cli", "--state-dir", state
        )
        assert published.returncode == 0, published.stderr
        assert published.stdout.startswith("published to feed:cli: offset 1")
        message = await ws.receive(timeout=10)
        assert message.data == "hello from the cli"  # a raw client gets the bare data
        history = _cli("history", "feed:cli", "--json", "--state-dir", state)
        assert [p["data"] for p in json.loads(history.stdout)["publications"]] == [
            "hello from the cli"
        ]
        stats = _cli("presence", "chat:nobody", "--stats", "--state-dir", state)
        assert stats.stdout.strip() == "chat:nobody: 0 clients, 0 users"
        key = _cli("apikey", "create", "publisher", "--scope", "publish", "--state-dir", state)
        assert key.returncode == 0 and len(key.stdout.strip()) > 30
        narrow = key.stdout.strip()
        ok = await _once_the_key_is_known(
            "publish", "feed:cli", "x", "--api-key", narrow, "--state-dir", state
        )
        assert ok.returncode == 0, ok.stderr
        refused = await _once_the_key_is_known(
            "presence", "chat:x", "--api-key", narrow, "--state-dir", state
        )
        assert refused.returncode != 0
        assert refused.stderr.strip() == (
            "wsfleet: error: presence: HTTP 403: forbidden: the key 'publisher' lacks the "
            "scope 'presence'"
        )
