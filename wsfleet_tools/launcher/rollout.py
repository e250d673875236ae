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
            if not info.child.running:  # crashed or stopped behind the launcher's back
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
