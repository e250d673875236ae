"""The fleet registry: which gateway pods exist and in which state.

One small interface (:class:`Registry`), two implementations: Redis for real
fleets (:mod:`wsfleet.registry.redis_registry`) and memory for unit tests
(:mod:`wsfleet.registry.memory`). Both pass the same contract tests.
"""

from wsfleet.registry.base import (
    ConnectionRecord,
    EdgeDrain,
    EnvoyPresence,
    HashSources,
    PodRecord,
    PodState,
    QuotaExceeded,
    Registry,
    RegistryUnavailable,
    new_connection_id,
    user_bucket,
)

__all__ = [
    "ConnectionRecord",
    "EdgeDrain",
    "EnvoyPresence",
    "HashSources",
    "PodRecord",
    "PodState",
    "QuotaExceeded",
    "Registry",
    "RegistryUnavailable",
    "new_connection_id",
    "user_bucket",
]
