"""Per-pod credentials on the real fleet: a gateway is handed only its own pod key (no root
registry key, no operators' admin token, no Redis password on a command line); the
control plane ignores records a pod made for another pod, records copied under another
pod's key, stale replays and rolled-back states. And a plaintext control plane serves no
TLS private keys; the Kubernetes gateway container mounts no fleet secret."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from tests.certs import write_self_signed
from tests.helpers import unlimited_session, wait_for
from tests.policies import websocket_policy
from wsfleet.readiness import read_ready
from wsfleet.registry import PodRecord
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import PodSigner, read_registry_key
from wsfleet_tools.launcher.embedded_redis import redis_server_binary
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.ports import free_port

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def _proc(pid: int, what: str) -> bytes:
    return Path(f"/proc/{pid}/{what}").read_bytes()


async def _pods(fleet: LocalFleet) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with (
        unlimited_session() as session,
        session.get(f"{fleet.admin_url}/pods", headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return list((await response.json())["pods"])


async def _live(fleet: LocalFleet) -> dict[str, str]:
    """Pod id -> state, of the pods the control plane trusts now (not the ones gone)."""
    return {p["pod_id"]: p["state"] for p in await _pods(fleet) if p["state"] != "gone"}


async def _password_redis(directory: Path, password: str) -> tuple[asyncio.subprocess.Process, int]:
    """A redis-server that wants a password (given in its config file, not its argv)."""
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"
    config.write_text(
        f'bind 127.0.0.1\nport {port}\ndir {directory}\nsave ""\nappendonly no\n'
        f"requirepass {password}\n"
    )
    process = await asyncio.create_subprocess_exec(
        str(redis_server_binary()),
        str(config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = aioredis.Redis(port=port, password=password, socket_connect_timeout=0.2)
    try:
        for _ in range(250):
            try:
                await client.ping()
                return process, port
            except (OSError, aioredis.ConnectionError):
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()
    process.kill()
    raise RuntimeError("redis-server did not start")


async def test_a_gateway_is_given_only_its_own_key_and_no_password_on_a_command_line(
    fleet_factory, tmp_path: Path
) -> None:
    password = secrets.token_hex(12)
    redis_process, port = await _password_redis(tmp_path / "redis", password)
    try:
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        fleet: LocalFleet = await fleet_factory(sidecars=1, redis_url=url, api_instances=1)
        root = fleet.registry_key_path.read_bytes().strip()
        operators = fleet.admin_token.encode()
        pods = {name: fleet.supervisor.find(name) for name in ("sidecar-1", "api-1")}
        for name, child in pods.items():
            assert child is not None and child.running, name
            argv = _proc(child.pid, "cmdline")
            environ = _proc(child.pid, "environ")
            given = argv + b"\0" + environ
            for secret in (root, operators, str(fleet.registry_key_path).encode()):
                assert secret not in given, name
            assert str(fleet.admin_token_path).encode() not in given, name
            key_file = fleet.pod_key_path(name)
            assert str(key_file).encode() in argv  # its own key file, and only that
            assert key_file.stat().st_mode & 0o777 == 0o600
            assert root not in key_file.read_bytes()
            signer = read_registry_key(key_file)
            assert signer is not None and signer.pod_id == name and not signer.is_root
        for child in fleet.supervisor.children:  # every process the launcher started
            if child.running:
                assert password.encode() not in _proc(child.pid, "cmdline"), child.name
        sidecar = pods["sidecar-1"]
        assert sidecar is not None
        assert b"WSFLEET_REDIS_URL=" + url.encode() in _proc(sidecar.pid, "environ").split(b"\0")
        # the operators' token does not open a pod's admin API; the pod's own token does,
        # and it is what the control plane derives from the root key
        admin = f"http://127.0.0.1:{fleet.info.sidecars['sidecar-1'].admin_port}/disconnect"
        async with unlimited_session() as session:
            for token, status in ((fleet.admin_token, 401), (fleet.pod_admin_token("x"), 401)):
                headers = {"Authorization": f"Bearer {token}"}
                body = {"user_id": "nobody"}
                async with session.post(admin, json=body, headers=headers) as response:
                    assert response.status == status
            headers = {"Authorization": f"Bearer {fleet.pod_admin_token('sidecar-1')}"}
            async with session.post(admin, json={"user_id": "nobody"}, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
    finally:
        redis_process.kill()
        await redis_process.wait()


async def test_a_pod_key_cannot_register_another_pod(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    stolen = read_registry_key(fleet.pod_key_path("sidecar-1"))  # a compromised gateway's
    assert stolen is not None
    own_key = stolen.pod_key("sidecar-1")
    posing = RedisRegistry(fleet.info.redis_url, signer=PodSigner(own_key, pod_id="forged"))
    operators = RedisRegistry(fleet.info.redis_url, signer=fleet.pod_signer())
    try:
        await posing.put_pod(PodRecord("forged", "gateways", "127.0.0.1", 1, 2), ttl_s=60)
        # then a record the control plane must take: once it lists that one, it has read
        # the forged one too (both sit in the same set, read together)
        await operators.put_pod(PodRecord("genuine", "gateways", "127.0.0.1", 3, 4), ttl_s=60)
        live = await _live(fleet)
        assert "genuine" in live and "sidecar-1" in live
        assert "forged" not in live
    finally:
        await posing.close()
        await operators.close()


async def test_copied_stale_and_rolled_back_records_are_ignored(fleet_factory) -> None:
    fleet: LocalFleet = await fleet_factory(sidecars=1)
    store = aioredis.from_url(fleet.info.redis_url, decode_responses=True)
    root = fleet.registry_key_path.read_bytes().strip()
    late = PodSigner(root, clock=lambda: time.time() - 120)  # signed two minutes ago
    stale = RedisRegistry(fleet.info.redis_url, signer=late)
    try:
        captured = await store.hgetall("wsfleet:pod:sidecar-1")
        assert captured["state"] == "serving" and captured["sig"]
        # copied, valid signature and all, under another pod's key
        await store.hset("wsfleet:pod:ghost", mapping=captured)
        await store.expire("wsfleet:pod:ghost", 60)
        await store.sadd("wsfleet:pods", "ghost")
        # a record signed long ago (a dead pod's, replayed)
        await stale.put_pod(PodRecord("long-dead", "gateways", "127.0.0.1", 5, 6), ttl_s=60)
        pods = await _pods(fleet)
        assert [p["pod_id"] for p in pods if p["state"] != "gone"] == ["sidecar-1"]

        # sidecar-1 drains; its SERVING record is written back over the draining one
        headers = {"Authorization": f"Bearer {fleet.admin_token}"}
        async with (
            unlimited_session() as session,
            session.post(
                f"{fleet.admin_url}/drain",
                json={"pod": "sidecar-1", "budget_s": 0},
                headers=headers,
            ) as response,
        ):
            assert response.status in (200, 202), await response.text()
        await wait_for(lambda: _not_serving(fleet), DEADLINE_S)
        await store.hset("wsfleet:pod:sidecar-1", mapping=captured)
        assert (await _live(fleet)).get("sidecar-1") != "serving"
    finally:
        await store.aclose()
        await stale.close()


async def _not_serving(fleet: LocalFleet) -> bool:
    return (await _live(fleet)).get("sidecar-1") in ("draining", "drained")


async def _plaintext_control_plane(
    tmp_path: Path, redis_url: str
) -> tuple[asyncio.subprocess.Process, dict[str, Any], Path, str]:
    write_self_signed(tmp_path / "edge.crt", tmp_path / "edge.key", "edge")
    policy = tmp_path / "policy.yaml"
    policy.write_text(websocket_policy(free_port(), tls=True))
    token = secrets.token_urlsafe(24)
    (tmp_path / "admin.token").write_text(token)
    ready, log_file = tmp_path / "xds.ready.json", tmp_path / "xds.log"
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "wsfleet_tools", "--log-level", "info", "xds"),
            *("--policy", str(policy), "--grpc-port", "0", "--admin-port", "0"),
            *("--admin-token-file", str(tmp_path / "admin.token")),
            *("--ready-file", str(ready)),
            env={**_environ(), "WSFLEET_REDIS_URL": redis_url},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + DEADLINE_S
    while (facts := read_ready(ready)) is None:
        assert process.returncode is None, log_file.read_text()
        assert time.monotonic() < deadline, "the control plane did not start"
        await asyncio.sleep(0.05)
    return process, facts, log_file, token


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WSFLEET_")}


async def test_a_plaintext_control_plane_serves_no_private_keys_and_says_so(
    redis_server, tmp_path: Path
) -> None:
    process, facts, log_file, token = await _plaintext_control_plane(tmp_path, redis_server.url)
    try:
        url = f"http://127.0.0.1:{facts['admin_port']}/debug/config"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as got:
            config = await got.json()
        assert "public" in config["lds"]["resources"]  # the policy was loaded and served
        assert config.get("sds", {}).get("resources", {}) == {}  # but not its private key
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), DEADLINE_S)
        except TimeoutError:  # it did not stop: fail, leaving no process behind
            process.kill()
            await process.wait()
            raise
    logged = log_file.read_text()
    assert "xds_plaintext" in logged and "xds_secrets_withheld" in logged


@pytest.mark.parametrize("directory", ["base", "overlays/region-5m"])
def test_the_kubernetes_gateway_container_mounts_no_fleet_secret(directory: str) -> None:
    # no silent skip: kubectl (Debian's package) renders kustomize offline
    assert shutil.which("kubectl"), "this test needs kubectl on PATH (apt-get install kubectl)"
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "deploy" / "kubernetes" / directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    (gateways,) = [
        d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "gateways"
    ]
    spec = gateways["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}

    def secrets_mounted(container: dict[str, Any]) -> set[str]:
        names = set()
        for mount in container.get("volumeMounts", []):
            source = volumes[mount["name"]]
            if "secret" in source:
                items = source["secret"].get("items")
                names |= {i["key"] for i in items} if items else {"<every key>"}
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(f"{ref['name']}/{ref['key']}")
        return names

    (gateway,) = spec["containers"]
    mounted = secrets_mounted(gateway)
    assert mounted <= {"auth.key", "wsfleet-redis/url"}, mounted  # no registry.key, admin.token
    (init,) = spec["initContainers"]  # derives the pod key, from the pod name
    assert "registry.key" in secrets_mounted(init)
    pod_key_volume = {m["name"] for m in init["volumeMounts"]} & {
        m["name"] for m in gateway["volumeMounts"]
    }
    (shared,) = pod_key_volume
    assert "emptyDir" in volumes[shared]
    assert json.dumps(gateway).count("admin.token") == 0
