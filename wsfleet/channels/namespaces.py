"""Namespace options: what a channel keeps (history, presence) and who may do what in it.

Declared in the routing policy (``channels:``), validated there with the policy's file
and line, written to the registry by the control plane as JSON and followed by every
gateway and server API instance (:mod:`wsfleet.channels.config_follower`).
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from wsfleet.channels.names import namespace_of

MAX_HISTORY_SIZE = 10_000
MAX_HISTORY_TTL_S = 30 * 86_400
MAX_PUBLICATION_BYTES = 16 << 20
DEFAULT_PUBLICATION_BYTES = 64 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamespaceOptions(_Frozen):
    """What a namespace's channels keep and allow (see docs/channels.md)."""

    history_size: Annotated[int, Field(ge=0, le=MAX_HISTORY_SIZE)] = 0
    history_ttl_s: Annotated[float, Field(gt=0, le=MAX_HISTORY_TTL_S)] = 300.0
    presence: bool = False
    join_leave: bool = False
    allow_subscribe: bool = False
    allow_publish: bool = False
    publish_via_backend: bool = False
    max_publication_bytes: Annotated[int, Field(ge=1, le=MAX_PUBLICATION_BYTES)] = (
        DEFAULT_PUBLICATION_BYTES
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.join_leave and not self.presence:
            raise ValueError("join_leave needs presence: true")
        if self.publish_via_backend and not self.allow_publish:
            raise ValueError("publish_via_backend needs allow_publish: true")
        return self

    @property
    def recoverable(self) -> bool:
        return self.history_size > 0


class Namespace(NamespaceOptions):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class ChannelsConfig(_Frozen):
    """The default namespace's options and the named namespaces."""

    defaults: NamespaceOptions = NamespaceOptions()
    namespaces: list[Namespace] = []

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: set[str] = set()
        for namespace in self.namespaces:
            if namespace.name in seen:
                raise ValueError(f"namespace {namespace.name!r} is declared twice")
            seen.add(namespace.name)
        return self

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ChannelsConfig:
        """Parse what :meth:`to_json` wrote; ``ValueError`` on anything else."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise ValueError(f"not a channels configuration: {exc.error_count()} errors") from None


class Namespaces:
    """A lookup of channel -> options, cached per namespace (the configuration is small
    and changes rarely; lookups happen on every subscribe and publication)."""

    __slots__ = ("_by_name", "config")

    def __init__(self, config: ChannelsConfig) -> None:
        self.config = config
        self._by_name: dict[str, NamespaceOptions] = {ns.name: ns for ns in config.namespaces}
        self._by_name[""] = config.defaults

    def options_for(self, channel: str) -> NamespaceOptions | None:
        """The options of a (valid) channel's namespace; None if it is not declared."""
        return self._by_name.get(namespace_of(channel))


__all__ = [
    "DEFAULT_PUBLICATION_BYTES",
    "MAX_HISTORY_SIZE",
    "MAX_HISTORY_TTL_S",
    "ChannelsConfig",
    "Namespace",
    "NamespaceOptions",
    "Namespaces",
]
