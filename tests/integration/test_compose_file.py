"""compose.yaml: valid for docker-compose, and every command in it is one wsfleet accepts.

There is no Docker engine here; the same topology runs as local processes in
the other integration tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wsfleet_tools.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"

pytestmark = pytest.mark.integration


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, (
        "docker-compose is missing: `make test` installs it (Debian package docker-compose)"
    )
    return found


PASSWORD = "compose-test-password"
ENV = {**os.environ, "REDIS_PASSWORD": PASSWORD}


def _config(
    file: Path = COMPOSE, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on ``file`` (with REDIS_PASSWORD set unless ``env`` says)."""
    return subprocess.run(
        [_docker_compose(), "-f", str(file), "config", *flags],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=file.parent,
        env=ENV if env is None else env,
    )


def _resolved() -> dict[str, object]:
    result = _config()
    assert result.returncode == 0, result.stderr
    loaded: dict[str, object] = yaml.safe_load(result.stdout)
    return loaded


def test_docker_compose_accepts_the_file() -> None:
    result = _config(COMPOSE, "-q")
    assert result.returncode == 0, result.stderr


def test_redis_needs_a_password_and_every_client_carries_it() -> None:
    without = {key: value for key, value in os.environ.items() if key != "REDIS_PASSWORD"}
    result = _config(COMPOSE, "-q", env=without)
    assert result.returncode != 0 and "REDIS_PASSWORD" in result.stderr
    services = _resolved()["services"]
    assert isinstance(services, dict)
    assert services["redis"]["command"][-2:] == ["--requirepass", PASSWORD]
    urls = [
        service["environment"]["WSFLEET_REDIS_URL"]
        for service in services.values()
        if "WSFLEET_REDIS_URL" in service.get("environment", {})
    ]
    assert len(urls) == 5 and all(url == f"redis://:{PASSWORD}@redis:6379/0" for url in urls)
    for name, service in services.items():  # in the environment, never on a command line
        assert PASSWORD not in " ".join(service.get("command") or []) or name == "redis", name


def _sources(service: dict[str, Any]) -> set[str]:
    """The volumes a service mounts (long or short syntax)."""
    return {
        str(v["source"]) if isinstance(v, dict) else v.split(":")[0] for v in service["volumes"]
    }


def _pod_key_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("entrypoint") == ["sh", "-c"]}


def test_each_pod_gets_its_own_key_and_never_the_state_volume() -> None:
    services = _resolved()["services"]
    assert isinstance(services, dict)
    parser = build_parser()
    pods = {n: s for n, s in services.items() if s.get("command", [""])[0] in ("sidecar", "api")}
    assert len(pods) == 4
    for name, service in pods.items():
        assert _sources(service) == {name}, name  # a volume of its own; not `state` (registry.key)
        args = parser.parse_args(service["command"])
        assert str(args.registry_key_file).startswith("/pod/")
        (issuer,) = [
            s
            for s in _pod_key_services(services).values()
            if f"--pod-key {name} " in s["command"][0]
        ]
        assert _sources(issuer) == {"state", name}


def test_only_loopback_ports_are_published() -> None:
    services = _resolved()["services"]
    assert isinstance(services, dict)
    for name, service in services.items():
        for published in service.get("ports", []):
            host_ip = published.get("host_ip") if isinstance(published, dict) else published
            assert str(host_ip).startswith("127.0.0.1"), (name, published)


def test_docker_compose_rejects_a_broken_copy(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("services:", "servicez:", 1))
    result = _config(broken, "-q")
    assert result.returncode != 0
    assert "servicez" in result.stderr


def test_the_topology_matches_the_local_fleet() -> None:
    services = _resolved()["services"]
    assert isinstance(services, dict)
    assert {"redis", "xds-server", "envoy", "backend", "sidecar-1", "sidecar-2"} <= set(services)
    assert {"api-1", "api-2"} <= set(services)  # the server API: two, any takes any call


def test_every_wsfleet_command_in_the_file_parses() -> None:
    services = _resolved()["services"]
    assert isinstance(services, dict)
    parser = build_parser()
    checked = 0
    for name, service in services.items():
        if service.get("image") != "wsfleet:local":
            continue
        if name in _pod_key_services(services):  # sh -c "cp ... && wsfleet keygen ..."
            wsfleet = service["command"][0].split("&& wsfleet ", 1)[1]
            assert parser.parse_args(wsfleet.split()).command == "keygen", name
            continue
        args = parser.parse_args(service["command"])
        assert args.command in {"xds", "sidecar", "backend", "envoy", "keygen", "api"}, name
        checked += 1
    assert checked == 8


def test_the_compose_policy_is_valid() -> None:
    from xds_server.policy_loader import load_policy_file

    policy = load_policy_file(ROOT / "deploy" / "compose-policy.yaml")
    assert policy.listeners[0].address == "0.0.0.0"


def test_sidecars_get_more_time_to_stop_than_their_drain_budget_takes() -> None:
    from sidecar.main import DRAIN_OVERRUN_S
    from wsfleet.settings import SidecarSettings
    from wsfleet.settings_flags import from_args

    services = _resolved()["services"]
    assert isinstance(services, dict)
    parser = build_parser()
    sidecars = {name: s for name, s in services.items() if s["command"][0] == "sidecar"}
    assert sidecars
    for name, service in sidecars.items():
        environ = service["environment"]
        settings = from_args(
            SidecarSettings, parser.parse_args(service["command"]), environ=environ
        )
        budget, shutdown_s = settings.drain_budget_s, settings.shutdown_timeout_s
        grace = service["stop_grace_period"]
        seconds = float(grace.rstrip("s")) if isinstance(grace, str) else float(grace)
        # the drain, its overrun, then the final 1001 closes
        assert seconds > budget + DRAIN_OVERRUN_S + shutdown_s, name
