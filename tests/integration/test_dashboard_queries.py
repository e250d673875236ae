"""The Grafana dashboard and the Prometheus rules against a real Prometheus scraping a real
local fleet: every panel's query and every rule's expression returns data.

One fleet (two gateways, the server API), one ``prometheus`` (the Debian package's binary,
see scripts/install-test-deps.sh) on a free loopback port with a private data directory,
scraping every 1 s and evaluating deploy/monitoring/rules/wsfleet.rules.yaml every 1 s.
A little traffic (handshakes, a refusal, messages, pings, a channel publication, a drain
that stays running) makes every series the dashboard and the rules read exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.certs import write_self_signed
from tests.helpers import open_ws, unlimited_session, until
from wsfleet_tools.launcher.fleet import LocalFleet
from wsfleet_tools.launcher.ports import free_port
from xds_server.policy_loader import default_policy_text

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/monitoring/rules/wsfleet.rules.yaml"
DASHBOARD = ROOT / "deploy/monitoring/grafana/wsfleet-dashboard.json"

# Grafana's variables, as Grafana would fill them in for a 15 s scrape interval
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}
# Series that only exist where wsfleet runs in Kubernetes: a query or rule operand that reads
# one is not asked for data here (the rest of its expression still is).
KUBERNETES_ONLY = {
    "kube_horizontalpodautoscaler_status_desired_replicas": (
        "kube-state-metrics: the gateways HorizontalPodAutoscaler's desired replicas"
    ),
}
SCRAPE_INTERVAL = "1s"
DATA_TIMEOUT_S = 30.0  # a guard: on an idle machine every query has data within ~3 s


# -- PromQL: the operands of an expression's top-level comparisons and set operators --------

_SET_OPERATORS = ("or", "and", "unless")  # lowest precedence first
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_MODIFIERS = re.compile(
    r"^\s*(bool\b)?\s*((on|ignoring)\s*\([^)]*\))?\s*((group_left|group_right)\s*(\([^)]*\))?)?"
)
_NUMBER_ONLY = re.compile(r"^[\d\s.eE+\-*/()]+$")


def _top_level(expr: str) -> Iterator[tuple[int, str]]:
    """(index, character) of ``expr`` outside brackets and string literals."""
    depth, quote = 0, ""
    for index, char in enumerate(expr):
        if quote:
            if char == quote and expr[index - 1] != "\\":
                quote = ""
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            yield index, char


def _split_once(expr: str) -> tuple[str, str] | None:
    """Split at the lowest-precedence top-level binary operator (set, then comparison)."""
    positions = [index for index, _ in _top_level(expr)]
    for word in _SET_OPERATORS:
        for index in positions:
            if re.match(rf"\b{word}\b", expr[index:]) and (
                index == 0 or not (expr[index - 1].isalnum() or expr[index - 1] in "_:")
            ):
                return expr[:index], expr[index + len(word) :]
    for index in positions:
        for op in _COMPARISONS:
            if expr.startswith(op, index) and expr[index - 1] not in "=!<>":
                return expr[:index], expr[index + len(op) :]
    return None


def operands(expr: str) -> list[str]:
    """The value-bearing parts of ``expr``: it is cut at its top-level set operators and
    comparisons (``a > 3 * b and c < 1`` gives ``a``, ``3 * b``, ``c``); numbers are left
    out. A healthy fleet's alert is quiet (its expression is empty), but each operand it
    compares must still have data, or the alert could never fire."""
    expr = re.sub(r"#[^\n]*", "", expr).strip()
    while expr.startswith("(") and _closing(expr) == len(expr) - 1:
        expr = expr[1:-1].strip()
    parts = _split_once(expr)
    if parts is None:
        return [] if _NUMBER_ONLY.match(expr) else [expr]
    left, right = parts
    right = right[_MODIFIERS.match(right).end() :]  # type: ignore[union-attr]
    return operands(left) + operands(right)


def _closing(expr: str) -> int:
    depth = 0
    for index, char in enumerate(expr):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return index
    return -1


def test_operands_cut_at_top_level_comparisons_and_set_operators() -> None:
    assert operands("a > 3 * b and c * 300 > 0.005 * d") == ["a", "3 * b", "c * 300", "0.005 * d"]
    assert operands('x{outcome=~"a|b"} < 0.9995') == ['x{outcome=~"a|b"}']
    assert operands("(t - s - b) and s > 0") == ["t - s - b", "s"]
    assert operands("sum(rate(x[5m])) or sum(y == 1)") == ["sum(rate(x[5m]))", "sum(y == 1)"]
    assert operands("m - on(ns) group_left r > 0") == ["m - on(ns) group_left r"]
    assert operands("a / on(i) group_left(g) b") == ["a / on(i) group_left(g) b"]
    assert operands("a > bool 2 * 86400") == ["a"]
    assert operands("a unless on(x) b") == ["a", "b"]
    assert arithmetic_parts('max by (ns) (k{a="b-c"})\n- r:s:t') == [
        'max by (ns) (k{a="b-c"})',
        "r:s:t",
    ]
    assert arithmetic_parts("a / on(i) group_left(g) b * 2") == ["a", "b"]


# -- what is queried ---------------------------------------------------------------------


def dashboard_queries() -> dict[str, str]:
    """Every target of every dashboard panel: "panel title / refId" -> PromQL, with the
    Grafana variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    queries: dict[str, str] = {}
    for panel in _panels(board["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            queries[f"{panel['title']} / {target['refId']}"] = expr
    return queries


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


def rule_operands() -> dict[str, str]:
    """Every operand of every rule's expression: "rule name [n]" -> PromQL."""
    found: dict[str, str] = {}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            for index, part in enumerate(operands(rule["expr"])):
                found[f"{name} [{index}]"] = part
    return found


def kubernetes_only(expr: str) -> str | None:
    return next((why for metric, why in KUBERNETES_ONLY.items() if metric in expr), None)


def split_kubernetes_only(queries: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(what to ask, what not to ask here with the reason). A rule operand that reads a
    Kubernetes-only series is cut at its top-level arithmetic and its wsfleet half is asked;
    a dashboard target that reads one must have a sibling target in its panel that is asked."""
    asked, skipped = {}, {}
    for key, expr in queries.items():
        why = kubernetes_only(expr)
        if why is None:
            asked[key] = expr
            continue
        skipped[key] = why
        if key.startswith("rule: "):
            ours = [part for part in arithmetic_parts(expr) if not kubernetes_only(part)]
            assert ours, f"{key}: nothing of it can be checked outside Kubernetes"
            asked.update({f"{key} (wsfleet half {n})": part for n, part in enumerate(ours)})
        else:
            panel = key.rsplit(" / ", 1)[0] + " / "
            assert any(
                other.startswith(panel) and not kubernetes_only(other_expr)
                for other, other_expr in queries.items()
            ), f"{key}: its panel shows nothing outside Kubernetes"
    return asked, skipped


def arithmetic_parts(expr: str) -> list[str]:
    """``expr`` cut at its top-level + - * / (vector-matching modifiers dropped)."""
    parts, start = [], 0
    for index, char in _top_level(expr):
        if char in "+-*/" and not re.search(r"\d[eE]$", expr[start:index]):
            parts.append(expr[start:index])
            start = index + 1
    parts.append(expr[start:])
    cleaned = (part[_MODIFIERS.match(part).end() :].strip() for part in parts)  # type: ignore[union-attr]
    return [part for part in cleaned if part and not _NUMBER_ONLY.match(part)]


# -- a real Prometheus -------------------------------------------------------------------


class Prometheus:
    """``prometheus`` on a free loopback port, a data directory of its own, stopped by PID."""

    def __init__(self, directory: Path, jobs: dict[str, tuple[str, list[int]]]) -> None:
        self.port = free_port()
        self.directory = directory
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": path,
                    "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in ports]}],
                }
                for job, (path, ports) in jobs.items()
            ],
        }
        directory.mkdir(parents=True)
        (directory / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        self.targets = sum(len(ports) for _, ports in jobs.values())
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: run scripts/install-test-deps.sh"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={self.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "prometheus.log").open("wb"),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    async def query(self, session: aiohttp.ClientSession, expr: str) -> list[dict[str, Any]]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": expr}) as response:
            answer = await response.json()
        assert answer["status"] == "success", f"{expr}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        assert self.process is not None and self.process.poll() is None, self.log()
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        return False

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")[-2000:]


def has_data(result: list[dict[str, Any]]) -> bool:
    """Non-empty, and some sample is a number (a ratio of nothing is NaN: not data)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


# -- the fleet and its traffic -----------------------------------------------------------


@contextlib.asynccontextmanager
async def traffic(fleet: LocalFleet, session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Clients that stay connected (and answer pings) while the test queries, a refused
    handshake, echoed messages, a channel publication, and a drain of sidecar-2 that runs
    until the fleet stops (its budget is long; a client held on it keeps it running)."""
    sockets = []
    for n in range(3):
        ws, _ = await open_ws(fleet, session, f"watcher-{n}")
        sockets.append(ws)
    pod = fleet.info.sidecars["sidecar-2"]
    held = await session.ws_connect(
        f"ws://127.0.0.1:{pod.port}/ws?user=held",
        headers={"Authorization": f"Bearer {fleet.token('held')}"},
    )
    sockets.append(held)
    received: list[str] = []  # watcher-0's messages
    readers = [  # pongs go out
        asyncio.ensure_future(_read_all(ws, received if n == 0 else []))
        for n, ws in enumerate(sockets)
    ]
    for ws in sockets[:3]:
        await ws.send_str("hello")
    refused = await session.get(
        fleet.client_url.replace("ws://", "http://") + "?user=intruder",
        headers={"Authorization": "Bearer not-a-token", "Upgrade": "websocket"},
    )
    refused.release()
    await _publish_until_delivered(fleet, session, received)
    admin = {"Authorization": f"Bearer {fleet.admin_token}"}
    drain = {"pod": "sidecar-2", "budget_s": 600}
    async with session.post(f"{fleet.admin_url}/drain", json=drain, headers=admin) as answer:
        assert answer.status == 202, await answer.text()
    try:
        yield
    finally:
        for reader in readers:
            reader.cancel()
        for ws in sockets:
            await ws.close()


async def _publish_until_delivered(
    fleet: LocalFleet, session: aiohttp.ClientSession, received: list[str]
) -> None:
    """Subscribe watcher-0 to ``news`` through the server API and publish until a
    publication reaches it: the subscription travels to the gateway as a command through
    Redis, so a publication sent at once may come before it and reach nobody (bounded)."""
    api = {"Authorization": f"Bearer {fleet.api_key}"}
    body = {"user": "watcher-0", "channel": "news"}
    async with session.post(f"{fleet.api_url}/subscribe", json=body, headers=api) as answer:
        assert answer.status == 200, await answer.text()
    for _ in range(150):
        body = {"channel": "news", "data": "extra"}
        async with session.post(f"{fleet.api_url}/publish", json=body, headers=api) as answer:
            assert answer.status == 200, await answer.text()
        for _ in range(10):
            if "extra" in received:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"no publication reached watcher-0 in 30 s: {received}")


async def _read_all(ws: aiohttp.ClientWebSocketResponse, received: list[str]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.TEXT:
            received.append(message.data)


def policy_with_a_tls_listener(directory: Path) -> Path:
    """The default policy plus a second listener with TLS (a certificate served over SDS,
    so that its expiry is exported); the first listener, the tests' own, stays plain."""
    write_self_signed(directory / "edge.crt", directory / "edge.key")
    policy = yaml.safe_load(default_policy_text())
    policy["certificates"] = [
        {"name": "edge", "cert_file": "edge.crt", "key_file": "edge.key"},
    ]
    policy["listeners"].append(
        {
            "name": "public-tls",
            "address": "127.0.0.1",
            "port": free_port(),
            "tls": {"certificate": "edge"},
            "routes": ["websocket"],
        }
    )
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


async def test_every_dashboard_query_and_every_rule_returns_data(
    fleet_factory: Any, tmp_path: Path
) -> None:
    fleet: LocalFleet = await fleet_factory(
        sidecars=2,
        api_instances=1,
        policy_path=policy_with_a_tls_listener(tmp_path),
        sidecar_args=("--heartbeat-interval", "0.3"),
    )
    envoy = fleet.info.envoys["envoy"]
    prometheus = Prometheus(
        tmp_path / "prometheus",
        {
            "wsfleet-gateway": ("/metrics", [s.admin_port for s in fleet.info.sidecars.values()]),
            "wsfleet-control-plane": ("/metrics", [fleet.info.xds_admin_port]),
            "wsfleet-server-api": ("/metrics", [admin for _, admin in fleet.info.apis.values()]),
            # Envoy's stats listener (GET /stats/prometheus only), as in Kubernetes
            "envoy": ("/stats/prometheus", [envoy.stats_port]),
        },
    )
    queries = {f"dashboard: {key}": expr for key, expr in dashboard_queries().items()}
    queries.update({f"rule: {key}": expr for key, expr in rule_operands().items()})
    asked, skipped = split_kubernetes_only(queries)
    prometheus.start()
    try:
        async with unlimited_session() as session:
            await until(lambda: prometheus.ready(session), 30, "prometheus ready")

            async def every_target_up() -> bool:
                up = await prometheus.query(session, "up == 1")
                return len(up) == prometheus.targets

            # the counters' values before the traffic are scraped first: a rate needs both
            await until(every_target_up, 30, "every target scraped")
            async with traffic(fleet, session):
                await _every_query_has_data(prometheus, session, asked)
    finally:
        prometheus.stop()
    assert prometheus.process is not None and prometheus.process.returncode is not None
    assert skipped  # the autoscaler's half: listed, with its reason, in KUBERNETES_ONLY


async def _every_query_has_data(
    prometheus: Prometheus, session: aiohttp.ClientSession, asked: dict[str, str]
) -> None:
    missing: dict[str, str] = dict(asked)

    async def all_have_data() -> bool:
        for key, expr in list(missing.items()):
            if has_data(await prometheus.query(session, expr)):
                del missing[key]
        return not missing

    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await until(all_have_data, DATA_TIMEOUT_S, "data for every query")
    assert not missing, f"no data after {time.monotonic() - started:.0f} s for:\n" + "\n".join(
        f"  {key}: {expr}" for key, expr in missing.items()
    )
