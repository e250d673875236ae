"""The routing policy operators edit: typed, validated once, immutable.

See ``xds_server/default_policy.yaml`` for the commented format. Validation
errors name the file, line and problem (:mod:`xds_server.policy_loader`).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
PORT = Annotated[int, Field(ge=1, le=65535)]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LbPolicy(StrEnum):
    MAGLEV = "maglev"
    RING_HASH = "ring_hash"


class HashKey(Frozen):
    """Where Envoy finds the user id to hash on; any that are present are used."""

    header: str | None = "x-user-id"
    query_parameter: str | None = "user"
    cookie: str | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> Self:
        if not (self.header or self.query_parameter or self.cookie):
            raise ValueError("hash_key needs at least one of header, query_parameter, cookie")
        if self.header and not re.fullmatch(r"[a-z0-9-]+", self.header):
            raise ValueError(f"hash_key.header {self.header!r} must be a lower-case header name")
        return self


class Pool(Frozen):
    """A pool of gateway sidecars; members come from the registry."""

    name: NAME
    hash_key: HashKey = HashKey()
    lb_policy: LbPolicy = LbPolicy.MAGLEV
    connect_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # Envoy's own default caps a cluster at 1024 upstream connections; a pool
    # must admit its whole connection count.
    max_connections: Annotated[int, Field(ge=1)] = 1_000_000


class Route(Frozen):
    """A path prefix sent to a pool."""

    name: NAME
    path_prefix: Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~/-]*$")]
    pool: NAME
    websocket: bool = True


class Listener(Frozen):
    """An Envoy listener: address, port and the routes it serves, in order."""

    name: NAME
    address: str = "127.0.0.1"
    port: PORT
    routes: Annotated[list[NAME], Field(min_length=1)]


class Policy(Frozen):
    """A whole routing policy."""

    listeners: Annotated[list[Listener], Field(min_length=1)]
    routes: Annotated[list[Route], Field(min_length=1)]
    pools: Annotated[list[Pool], Field(min_length=1)]

    def pool(self, name: str) -> Pool:
        return next(pool for pool in self.pools if pool.name == name)

    def route(self, name: str) -> Route:
        return next(route for route in self.routes if route.name == name)

    def with_listener_port(self, port: int) -> Policy:
        """The same policy with its first listener moved to ``port`` (``wsfleet up --port``)."""
        first, *rest = self.listeners
        return self.model_copy(
            update={"listeners": [first.model_copy(update={"port": port}), *rest]}
        )


Loc = tuple[str | int, ...]


def reference_problems(policy: Policy) -> list[tuple[Loc, str]]:
    """Semantic checks the schema cannot express, each with the location it concerns."""
    problems: list[tuple[Loc, str]] = []
    for kind, names in (
        ("listeners", [item.name for item in policy.listeners]),
        ("routes", [item.name for item in policy.routes]),
        ("pools", [item.name for item in policy.pools]),
    ):
        seen: set[str] = set()
        for index, name in enumerate(names):
            if name in seen:
                problems.append(((kind, index, "name"), f"duplicate name {name!r}"))
            seen.add(name)
    bound: dict[int, str] = {}
    for index, listener in enumerate(policy.listeners):
        if listener.port in bound:
            problems.append(
                (
                    ("listeners", index, "port"),
                    f"port {listener.port} is already used by listener {bound[listener.port]!r}",
                )
            )
        bound.setdefault(listener.port, listener.name)
    pools = {pool.name for pool in policy.pools}
    routes = {route.name: route for route in policy.routes}
    for index, route in enumerate(policy.routes):
        if route.pool not in pools:
            problems.append((("routes", index, "pool"), f"unknown pool {route.pool!r}"))
    for index, listener in enumerate(policy.listeners):
        prefixes: set[str] = set()
        for position, name in enumerate(listener.routes):
            loc: Loc = ("listeners", index, "routes", position)
            if name not in routes:
                problems.append((loc, f"unknown route {name!r}"))
                continue
            prefix = routes[name].path_prefix
            if prefix in prefixes:
                problems.append((loc, f"a second route for path prefix {prefix!r}"))
            prefixes.add(prefix)
    return problems
