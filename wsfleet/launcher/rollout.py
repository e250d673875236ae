"""Blue/green rollout of the local fleet's sidecar pool.

1. start the green pods (as many as blue, or ``count``) and wait until Envoy has
   every one of them HEALTHY;
2. drain the blue pods through the control plane (``POST /drain``) within the
   budget: they turn DRAINING in EDS and close their clients with 1012, paced;
   the clients reconnect and land on green;
3. all along, watch green's handshake success rate; below ``min_success`` (after
   ``min_samples`` handshakes) abort and roll back: cancel the blue drains (blue
   serves again), drain green, stop green;
4. otherwise stop the blue pods once drained.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

if TYPE_CHECKING:
    from wsfleet.launcher.fleet import LocalFleet, SidecarInfo

log = structlog.get_logger()

CLIENT_SIDE_REFUSALS = frozenset({"accepted", "user_quota", "user_mismatch", "missing_token"})


@dataclass
class RolloutStatus:
    # idle, starting_green, draining_blue, stopping_blue, done, rolling_back, rolled_back, failed
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


async def _handshakes(session: aiohttp.ClientSession, pod: SidecarInfo) -> tuple[int, int]:
    """(all handshakes, failed ones) a pod has seen, from its metrics."""
    async with session.get(f"http://127.0.0.1:{pod.admin_port}/metrics") as response:
        text = await response.text()
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


async def _admin(
    session: aiohttp.ClientSession, fleet: LocalFleet, method: str, path: str, body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    async with session.request(
        method, fleet.admin_url + path, json=body, headers=headers
    ) as response:
        answer = await response.json(content_type=None)
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}: {answer}")
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
    blue = list(fleet.info.sidecars.values())
    status.blue = [pod.pod_id for pod in blue]
    status.phase = "starting_green"
    async with aiohttp.ClientSession() as session:
        green = [await fleet.start_sidecar(green_args) for _ in range(count or len(blue))]
        status.green = [pod.pod_id for pod in green]
        await fleet.wait_hosts_healthy({*status.blue, *status.green}, timeout_s=15)
        baselines = {pod.pod_id: await _handshakes(session, pod) for pod in green}
        status.phase = "draining_blue"
        drain = await _admin(
            session, fleet, "POST", "/drain", {"pods": status.blue, "budget_s": budget_s}
        )
        log.info("rollout_draining_blue", drain_id=drain["drain_id"], budget_s=budget_s)
        deadline = time.monotonic() + budget_s + 15
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            totals = [await _handshakes(session, pod) for pod in green]
            status.handshakes = sum(t for t, _ in totals) - sum(b[0] for b in baselines.values())
            status.failed_handshakes = sum(f for _, f in totals) - sum(
                b[1] for b in baselines.values()
            )
            if status.handshakes >= min_samples and status.success_rate < min_success:
                rate = status.success_rate
                status.message = f"green handshake success {rate:.4f} < {min_success}: rolled back"
                await _roll_back(session, fleet, status, blue, green)
                return status
            progress = await _admin(session, fleet, "GET", f"/drain/{drain['drain_id']}")
            if progress["state"] == "done":
                break
        status.phase = "stopping_blue"
        for pod in blue:
            await fleet.stop_sidecar(pod.pod_id)
        status.phase = "done"
        status.message = f"{len(green)} green pods serve; {len(blue)} blue pods stopped"
        log.info("rollout_done", green=status.green)
        return status


async def _roll_back(
    session: aiohttp.ClientSession,
    fleet: LocalFleet,
    status: RolloutStatus,
    blue: list[SidecarInfo],
    green: list[SidecarInfo],
) -> None:
    status.phase = "rolling_back"
    log.warning("rollout_rolling_back", reason=status.message)
    headers = {"Authorization": f"Bearer {fleet.admin_token}"}
    for pod in blue:
        async with session.post(
            f"http://127.0.0.1:{pod.admin_port}/drain/cancel", headers=headers
        ) as response:
            await response.read()
    await _admin(session, fleet, "POST", "/drain", {"pods": status.green, "budget_s": 2})
    for pod in green:
        await fleet.stop_sidecar(pod.pod_id, timeout_s=15)
    status.phase = "rolled_back"
