"""Pod records signed with the registry key: forged or altered ones are ignored (in Redis;
the keys and checks themselves: test_pod_credentials.py)."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from tests.conftest import RedisProcess
from wsfleet.registry import PodRecord
from wsfleet.registry.redis_registry import RedisRegistry
from wsfleet.registry.signing import PodSigner

pytestmark = pytest.mark.integration


def _signer() -> PodSigner:
    return PodSigner(secrets.token_hex(32).encode())


def _pod(pod_id: str, host: str = "127.0.0.1") -> PodRecord:
    return PodRecord(pod_id, "gateways", host, 9000, 9001, started_at=1.0)


async def test_a_reader_with_the_key_ignores_records_written_without_it(
    redis_server: RedisProcess,
) -> None:
    signer = _signer()
    pods = RedisRegistry(redis_server.url, namespace="signed", signer=signer)
    intruder = RedisRegistry(redis_server.url, namespace="signed")  # Redis access, no key
    try:
        await pods.put_pod(_pod("real"), ttl_s=10)
        await intruder.put_pod(_pod("fake", host="10.6.6.6"), ttl_s=10)
        await intruder.put_pod(dataclasses.replace(_pod("real"), host="10.6.6.6"), ttl_s=10)
        assert [p.pod_id for p in await pods.list_pods()] == []  # the real one was overwritten
        await pods.put_pod(_pod("real"), ttl_s=10)
        assert [p.pod_id for p in await pods.list_pods()] == ["real"]
        assert await pods.get_pod("fake") is None
        assert signer.rejected >= 3
        assert {p.pod_id for p in await intruder.list_pods()} == {"real", "fake"}  # no key: all
    finally:
        await pods.close()
        await intruder.close()
