"""Blue/green rollout of the local fleet's sidecar pool, from whatever state it is in.

1. look at the pool as the control plane sees it: blue is every sidecar the launcher
   runs, whether serving, draining or drained (pods already gone are forgotten);
2. start the green pods (as many as blue, or ``count``) and wait until Envoy routes
   to every one of them;
3. drain the blue pods that still hold sessions through the control plane
   (``POST /drain``) within the budget: they turn DRAINING in EDS and close their
   clients with 1012, paced; the clients reconnect and land on green;
4. all along, judge green by the handshakes of real users: green's own refusals
   (those the client did not cause) and every 5xx Envoy answered a client; below
   ``min_success`` (after ``min_samples`` handshakes), or on any error, roll back:
   blue pods that were serving serve again (``POST /undrain``), green is drained and
   stopped;
5. otherwise stop the blue pods once drained, and check a round trip through Envoy.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

if TYPE_CHECKING:
    from wsfleet_tools.launcher.fleet import LocalFleet, SidecarInfo

log = structlog.get_logger()

CLIENT_SIDE_REFUSALS = frozenset(
    {"accepted", "user_quota", "user_mismatch", "user_ambiguous", "missing_token"}
)
POLL_S = 0.5
DRAIN_OVERRUN_S = 15.0  # how long past the budget a blue drain may take before it is an error


@dataclass
class RolloutStatus:
    # idle, starting, starting_green, draining_blue, stopping_blue, done,
    # rolling_back, rolled_back, failed
    phase: str = "idle"
    blue: list[str] = field(default_factory=list)
    green: list[str] = field(default_factory=list)
    handshakes: int = 0
    failed_handshakes: int = 0
    message: str = ""
    started_at: float = field(default_factory=time.time)

    @property
    def success_rate(self) -> float:
        return 1.0 if not self.handshakes else 1 - self.failed_handshakes / self.handshakes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "success_rate": self.success_rate}


class RolloutAborted(Exception):
    """Green failed its users: the rollout rolls back."""


async def _metrics(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        return await response.text()


async def _green_handshakes(session: aiohttp.ClientSession, pod: SidecarInfo) -> tuple[int, int]:
    """(handshakes, failed ones) a green pod has seen, from its metrics."""
    text = await _metrics(session, f"http://127.0.0.1:{pod.admin_port}/metrics")
    total = failed = 0
    for line in text.splitlines():
        if line.startswith("wsfleet_gateway_handshakes_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            count = int(float(line.rsplit(" ", 1)[1]))
            if outcome == "accepted" or outcome not in CLIENT_SIDE_REFUSALS:
                total += count
            if outcome not in CLIENT_SIDE_REFUSALS:
                failed += count
    return total, failed


async def _envoy_failures(session: aiohttp.ClientSession, fleet: LocalFleet) -> int:
    """5xx answers Envoy gave clients (after its own retries), over every client listener."""
    base = f"http://127.0.0.1:{fleet.info.envoy_admin_port}"
    text = await _metrics(session, f"{base}/stats?filter=downstream_rq_5xx$")
    failures = 0
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith("http.") and not name.startswith("http.admin."):
            failures += int(value)
    return failures


class _Judge:
    """Counts real users' handshakes since the judge was made."""

    def __init__(self, session: aiohttp.ClientSession, fleet: LocalFleet) -> None:
        self._session = session
        self._fleet = fleet
        self._base: tuple[int, int] = (0, 0)

    async def _now(self, green: list[SidecarInfo]) -> tuple[int, int]:
        counts = [await _green_handshakes(self._session, pod) for pod in green]
        envoy = await _envoy_failures(self._session, self._fleet)
        return sum(t for t, _ in counts) + envoy, sum(f for _, f in counts) + envoy

    async def start(self, green: list[SidecarInfo]) -> None:
        self._base = await self._now(green)

    async def update(self, green: list[SidecarInfo], status: RolloutStatus) -> None:
        total, failed = await self._now(green)
        status.handshakes = total - self._base[0]
        status.failed_handshakes = failed - self._base[1]


async def _admin(
    session: aiohttp.ClientSession, fleet: LocalFleet, method: str, path: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with session.request(
        method, fleet.admin_url + path, json=body, headers=headers
    ) as response:
        answer = await response.json(content_type=None)
        if response.status >= 300:
            reason = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {reason}")
        return answer


async def rollout(
    fleet: LocalFleet,
    status: RolloutStatus,
    count: int | None = None,
    budget_s: float = 10.0,
    min_success: float = 0.999,
    min_samples: int = 20,
    green_args: tuple[str, ...] = (),
) -> RolloutStatus:
    async with aiohttp.ClientSession() as session:
        for info in list(fleet.info.sidecars.values()):
            # crashed or stopped behind the launcher's back (and not about to be restarted)
            if not info.child.running and not info.child.watched:
                fleet.info.sidecars.pop(info.pod_id)
        blue = list(fleet.info.sidecars.values())
        states = {
            pod["pod_id"]: pod["state"]
            for pod in (await _admin(session, fleet, "GET", "/pods"))["pods"]
        }
        serving = [pod.pod_id for pod in blue if states.get(pod.pod_id) == "serving"]
        holding = [pod.pod_id for pod in blue if states.get(pod.pod_id) in ("serving", "draining")]
        status.blue = [pod.pod_id for pod in blue]
        status.phase = "starting_green"
        green: list[SidecarInfo] = []
        judge = _Judge(session, fleet)
        try:
            for _ in range(count or max(1, len(blue))):
                green.append(await fleet.start_sidecar(green_args))  # returns once routable
                status.green = [pod.pod_id for pod in green]
            await judge.start(green)
            status.phase = "draining_blue"
            if holding:
                await _drain(
                    session,
                    fleet,
                    status,
                    judge,
                    green,
                    holding,
                    budget_s,
                    min_success,
                    min_samples,
                )
            status.phase = "stopping_blue"
            for pod in blue:
                await fleet.stop_sidecar(pod.pod_id)
            await fleet.wait_round_trip(10.0)
        except Exception as exc:
            if isinstance(exc, RolloutAborted):
                status.message = str(exc)
            else:
                status.message = f"{type(exc).__name__}: {exc}"
            try:
                await _roll_back(session, fleet, status, serving, green)
            except Exception as failure:  # reported, never lost
                status.phase = "failed"
                status.message += f"; the rollback failed too: {type(failure).__name__}: {failure}"
                return status
            status.message += ": rolled back"
            return status
        status.phase = "done"
        status.message = (
            f"{len(green)} green pods serve; {len(blue)} blue pods stopped; "
            f"handshake success {status.success_rate:.4f} of {status.handshakes}"
        )
        log.info("rollout_done", green=status.green)
        return status


async def _drain(
    session: aiohttp.ClientSession,
    fleet: LocalFleet,
    status: RolloutStatus,
    judge: _Judge,
    green: list[SidecarInfo],
    pods: list[str],
    budget_s: float,
    min_success: float,
    min_samples: int,
) -> None:
    drain = await _admin(session, fleet, "POST", "/drain", {"pods": pods, "budget_s": budget_s})
    log.info("rollout_draining_blue", drain_id=drain["drain_id"], budget_s=budget_s)
    deadline = time.monotonic() + budget_s + DRAIN_OVERRUN_S
    while True:
        await asyncio.sleep(POLL_S)
        await judge.update(green, status)
        if status.handshakes >= min_samples and status.success_rate < min_success:
            raise RolloutAborted(
                f"green handshake success {status.success_rate:.4f} < {min_success} "
                f"({status.failed_handshakes} of {status.handshakes} failed)"
            )
        progress = await _admin(session, fleet, "GET", f"/drain/{drain['drain_id']}")
        if progress["state"] == "done":
            failed = [pod for pod, p in progress["pods"].items() if p.get("state") == "error"]
            if failed:
                raise RuntimeError(f"blue pod(s) {failed} did not drain: {progress['pods']}")
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"blue drain not done {DRAIN_OVERRUN_S:g} s past its budget")


async def _roll_back(
    session: aiohttp.ClientSession,
    fleet: LocalFleet,
    status: RolloutStatus,
    serving: list[str],
    green: list[SidecarInfo],
) -> None:
    """Blue pods that were serving serve again; green drains and stops."""
    status.phase = "rolling_back"
    log.warning("rollout_rolling_back", reason=status.message)
    pods = {
        pod["pod_id"]: pod["state"]
        for pod in (await _admin(session, fleet, "GET", "/pods"))["pods"]
    }
    for pod_id in serving:
        if pods.get(pod_id) in ("draining", "drained"):
            await _admin(session, fleet, "POST", "/undrain", {"pod": pod_id})
    live_green = [pod.pod_id for pod in green if pods.get(pod.pod_id) == "serving"]
    if live_green:
        await _admin(session, fleet, "POST", "/drain", {"pods": live_green, "budget_s": 2})
    for pod in green:
        await fleet.stop_sidecar(pod.pod_id, timeout_s=15)
    status.phase = "rolled_back"


# -- rolling Envoy restarts ------------------------------------------------------------

ENVOY_POLL_S = 0.2
SERVING_TIMEOUT_S = 30.0  # a replacement Envoy synced with xDS and back in the L4 pool
REQUIRED_TYPES = frozenset({"cds", "lds"})  # an Envoy that ACKed none of these serves nothing


@dataclass
class EnvoyRolloutStatus:
    """A rolling restart of the region's L7 Envoys (``wsfleet rollout --envoys``)."""

    # idle, starting, draining, restarting, syncing, done, failed
    phase: str = "idle"
    envoy: str = ""  # the Envoy being replaced
    replaced: list[str] = field(default_factory=list)
    message: str = ""
    started_at: float = field(default_factory=time.time)
    # (Unix time, Envoy, phase) of every step: when each drain started and ended
    timeline: list[tuple[float, str, str]] = field(default_factory=list)

    def enter(self, phase: str, envoy: str) -> None:
        self.phase, self.envoy = phase, envoy
        self.timeline.append((time.time(), envoy, phase))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def envoy_rollout_refusal(envoys: int) -> str | None:
    """Why a fleet of ``envoys`` L7 Envoys cannot roll them (None: it can)."""
    if envoys < 2:
        return (
            f"a rolling Envoy restart needs at least 2 Envoys behind the L4 tier; this fleet runs "
            f"{envoys} (start it with wsfleet up --envoys 2 or more)"
        )
    return None


def node_synced(node: dict[str, Any], since: float) -> bool:
    """Whether one node of ``GET /debug/nodes`` is a stream opened at or after ``since``
    (Unix seconds) that has ACKed every version the control plane sent it, listeners and
    clusters included."""
    types: dict[str, Any] = node.get("types", {})
    return (
        bool(node.get("connected"))
        and float(node.get("connected_at", 0)) >= since
        and set(types) >= REQUIRED_TYPES
        and all(
            t["sent"]["version"] and t["acked"]["version"] == t["sent"]["version"]
            for t in types.values()
        )
    )


async def _replica_nodes(session: aiohttp.ClientSession, fleet: LocalFleet) -> list[dict[str, Any]]:
    """Every node of every control-plane replica (an Envoy streams from any one of them)."""
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    nodes: list[dict[str, Any]] = []
    for _, admin_port in fleet.info.xds_replicas.values():
        url = f"http://127.0.0.1:{admin_port}/debug/nodes"
        async with session.get(url, headers=headers) as response:
            nodes += (await response.json(content_type=None)).get("nodes", [])
    return nodes


async def _wait_synced(
    session: aiohttp.ClientSession, fleet: LocalFleet, name: str, since: float
) -> None:
    """Until the replacement's ADS stream ACKed the control plane's current config."""
    node_id = fleet.info.envoys[name].node_id
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    while time.monotonic() < deadline:
        nodes = await _replica_nodes(session, fleet)
        if any(n.get("node_id") == node_id and node_synced(n, since) for n in nodes):
            return
        await asyncio.sleep(ENVOY_POLL_S)
    raise TimeoutError(f"the new {name} did not ACK the control plane's config in time")


async def _wait_in_pool(fleet: LocalFleet, name: str, in_pool: bool) -> None:
    """Until the L4 tier's health check has taken ``name`` out of its pool (a stopped
    Envoy) or put it back (a replacement): its view before that is stale."""
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    while time.monotonic() < deadline:
        if (await fleet.l4_health()).get(name, False) is in_pool:
            return
        await asyncio.sleep(ENVOY_POLL_S)
    where = "back in" if in_pool else "out of"
    raise TimeoutError(f"{name} was not {where} the L4 pool within {SERVING_TIMEOUT_S:g} s")


async def _drain_envoy(
    session: aiohttp.ClientSession,
    fleet: LocalFleet,
    node_id: str,
    budget_s: float,
    delist_s: float | None,
) -> None:
    """Drain one Envoy through the control plane and wait until it says drained."""
    body: dict[str, Any] = {"node": node_id, "budget_s": budget_s}
    if delist_s is not None:  # else the control plane's default
        body["delist_s"] = delist_s
    view = await _admin(session, fleet, "POST", "/envoys/drain", body)
    delisting = float(view.get("delist_s", delist_s or 0))
    deadline = time.monotonic() + delisting + budget_s + DRAIN_OVERRUN_S
    while view.get("state") != "drained":
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{node_id} not drained {DRAIN_OVERRUN_S:g} s past its budget ({view})"
            )
        await asyncio.sleep(ENVOY_POLL_S)
        view = await _admin(session, fleet, "GET", f"/envoys/drain/{node_id}")


async def rollout_envoys(
    fleet: LocalFleet,
    status: EnvoyRolloutStatus,
    budget_s: float = 10.0,
    delist_s: float | None = None,
) -> EnvoyRolloutStatus:
    """Replace the L7 Envoys one at a time: drain (it leaves the L4 pool, then its clients
    are closed with 1012 over ``budget_s`` and reconnect through the L4 to the others),
    stop, undrain, start a replacement with the same node id, bootstrap and port, and wait
    until it serves (xDS ACKed, back in the L4 pool) before the next. On an error the
    Envoy at hand is undrained and running again; the status says what failed."""
    refusal = envoy_rollout_refusal(len(fleet.info.envoys))
    if refusal:
        raise ValueError(refusal)
    async with aiohttp.ClientSession() as session:
        for name in list(fleet.info.envoys):
            node_id = fleet.info.envoys[name].node_id
            try:
                status.enter("draining", name)
                log.info("envoy_rollout_draining", envoy=name, budget_s=budget_s)
                await _drain_envoy(session, fleet, node_id, budget_s, delist_s)
                status.enter("restarting", name)
                since = time.time()
                await fleet.stop_envoy(name)
                await _wait_in_pool(fleet, name, in_pool=False)
                await _admin(session, fleet, "POST", "/envoys/undrain", {"node": node_id})
                await fleet.start_envoy_again(name)
                status.enter("syncing", name)
                await _wait_synced(session, fleet, name, since)
                await _wait_in_pool(fleet, name, in_pool=True)
            except Exception as exc:
                status.enter("failed", name)
                status.message = f"{name}: {type(exc).__name__}: {exc}"
                await _restore(session, fleet, name, status)
                return status
            status.replaced.append(name)
    status.enter("done", "")
    status.message = f"{len(status.replaced)} Envoys replaced one at a time: {status.replaced}"
    log.info("envoy_rollout_done", replaced=status.replaced)
    return status


async def _restore(
    session: aiohttp.ClientSession, fleet: LocalFleet, name: str, status: EnvoyRolloutStatus
) -> None:
    """After a failed step: the Envoy at hand serves again (undrained, running)."""
    try:
        await _admin(
            session, fleet, "POST", "/envoys/undrain", {"node": fleet.info.envoys[name].node_id}
        )
        child = fleet.supervisor.find(name)
        if child is None or not (child.running or child.watched):
            await fleet.start_envoy_again(name)
    except Exception as failure:  # reported, never lost
        status.message += f"; restoring {name} failed too: {type(failure).__name__}: {failure}"
