"""The fleet's Redis: one embedded Redis (default), an embedded Redis Cluster
(``--redis-cluster``) or the operator's (``--redis-url``); and the outages the tests cause
(stop it, start it again empty, kill a cluster master)."""

from __future__ import annotations

import signal

from wsfleet.errors import StartupError
from wsfleet_tools.launcher.embedded_redis import start_embedded_redis, wait_redis
from wsfleet_tools.launcher.fleet_model import FleetContext
from wsfleet_tools.launcher.ports import free_port
from wsfleet_tools.launcher.redis_cluster import ClusterNode, cluster_url, start_redis_cluster


class FleetRedis:
    def __init__(self, ctx: FleetContext) -> None:
        self._ctx = ctx
        self.nodes: list[ClusterNode] = []  # with --redis-cluster

    async def start(self) -> None:
        """Start (or reach) the Redis the options name; note its URL in the fleet's info."""
        ctx, options = self._ctx, self._ctx.options
        if options.redis_cluster and options.redis_url is not None:
            raise StartupError("give --redis-url or --redis-cluster, not both")
        if options.redis_replicas and not options.redis_cluster:
            raise StartupError("--redis-replicas needs --redis-cluster")
        if options.redis_cluster:
            self.nodes = await start_redis_cluster(
                ctx.supervisor,
                options.redis_cluster,
                ctx.run_dir / "redis-cluster",
                options.redis_replicas,
            )
            ctx.info.redis_url = cluster_url(self.nodes)
        elif options.redis_url is None:
            port = free_port()
            _, url = await start_embedded_redis(ctx.supervisor, port, ctx.run_dir / "redis")
            ctx.info.redis_url, ctx.info.redis_embedded = url, True
        else:
            await wait_redis(options.redis_url, 3.0)
            ctx.info.redis_url = options.redis_url

    async def stop_redis(self) -> None:
        """Stop the embedded Redis (a registry outage); :meth:`start_redis` brings it back."""
        child = self._ctx.supervisor.find("redis")
        assert child is not None and self._ctx.info.redis_embedded
        await child.stop(5.0, signal.SIGKILL)

    async def kill_redis_master(self, name: str = "redis-1") -> None:
        """SIGKILL one master of the embedded Redis Cluster (its replica takes over)."""
        [node] = [node for node in self.nodes if node.name == name]
        assert node.master is None, f"{name} is a replica"
        await node.child.stop(5.0, signal.SIGKILL)

    async def start_redis(self) -> None:
        """Start the embedded Redis again on its port, empty (what a failover looks like)."""
        port = int(self._ctx.info.redis_url.rsplit(":", 1)[1].split("/")[0])
        await start_embedded_redis(self._ctx.supervisor, port, self._ctx.run_dir / "redis")
