"""The gateway reads the routing user exactly as Envoy hashes it, or refuses: Envoy hashes
the raw query value, every value of the header and the cookie's raw text, so anything a
decoder would read otherwise (percent-encoding, ``+``, a second value, escapes, bytes that
are not UTF-8) would let a client pick its gateway while passing as its user."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.admission import Refusal, handshake_query, hashed_user, routing_key
from sidecar.auth import Identity
from sidecar.core.http_head import RequestHead
from sidecar.session_registry import SessionRegistry, UnwritableRecord
from wsfleet.registry import ConnectionRecord, HashSources
from wsfleet.registry.memory import MemoryRegistry

DEFAULT = HashSources(header="x-user-id", query_parameter="user")
WITH_COOKIE = HashSources(header="x-user-id", query_parameter="user", cookie="uid")
ALICE = Identity("alice", {"sub": "alice", "exp": 2_000_000_000})


Headers = list[tuple[str, str]]


def request_for(query: str = "", headers: Headers | None = None) -> RequestHead:
    """A head as the gateway reads it: the query kept as sent, header bytes that are not
    UTF-8 as lone surrogates."""
    return RequestHead("GET", "/ws", query, (1, 1), CIMultiDictProxy(CIMultiDict(headers or [])))


def refusal_of(
    sources: HashSources, query: str = "", headers: Headers | None = None
) -> tuple[int, str]:
    with pytest.raises(Refusal) as refused:
        hashed_user(sources, request_for(query, headers))
    return refused.value.status, refused.value.reason


def test_a_plain_routing_value_is_the_user() -> None:
    assert hashed_user(DEFAULT, request_for("user=alice")) == "alice"
    assert hashed_user(DEFAULT, request_for("", [("x-user-id", "alice")])) == "alice"
    # other parameters may be encoded as the client likes: only the routing one is hashed
    assert hashed_user(DEFAULT, request_for("next=%2Fhome&user=alice")) == "alice"
    assert hashed_user(DEFAULT, request_for("user=al-ice.9_~")) == "al-ice.9_~"


@pytest.mark.parametrize("value", ["%61lice", "al%69ce", "alic%65", "al+ice", "al%20ice"])
def test_a_routing_query_value_that_decodes_to_something_else_is_refused(value: str) -> None:
    """Envoy hashes ``%61lice`` as it is; a decoder reads ``alice``."""
    assert refusal_of(DEFAULT, f"user={value}") == (400, "user_not_canonical")


def test_an_encoded_parameter_name_is_not_the_routing_parameter() -> None:
    """Envoy looks the parameter up by its raw name: ``%75ser`` is not ``user`` to it, so
    it is not to the gateway either (no user: the token's subject will not match)."""
    assert hashed_user(DEFAULT, request_for("%75ser=alice")) == ""


@pytest.mark.parametrize("query", ["user=alice&user=bob", "user=alice&user=alice"])
def test_a_routing_query_parameter_sent_twice_is_refused(query: str) -> None:
    assert refusal_of(DEFAULT, query) == (400, "user_ambiguous")


@pytest.mark.parametrize("second", ["bob", "alice"])
def test_a_routing_header_sent_twice_is_refused(second: str) -> None:
    """Envoy hashes every value of the header; the gateway would read the first."""
    headers = [("x-user-id", "alice"), ("x-user-id", second)]
    assert refusal_of(DEFAULT, "user=alice", headers) == (400, "user_ambiguous")


@pytest.mark.parametrize("value", ["al\udce9ce", "alice\x00", "ali\tce"])
def test_a_routing_user_that_is_not_printable_utf8_is_refused(value: str) -> None:
    """aiohttp reads header bytes that are not UTF-8 as lone surrogates."""
    assert refusal_of(DEFAULT, "", [("x-user-id", value)]) == (400, "user_not_canonical")


def test_a_routing_cookie_is_read_as_envoy_reads_it() -> None:
    assert hashed_user(WITH_COOKIE, request_for("", [("Cookie", "uid=alice")])) == "alice"
    assert hashed_user(WITH_COOKIE, request_for("", [("Cookie", 'uid="alice"')])) == "alice"
    # in another Cookie header than the first: Envoy reads every one, so does the gateway
    headers = [("Cookie", "theme=dark"), ("Cookie", "uid=alice")]
    assert hashed_user(WITH_COOKIE, request_for("", headers)) == "alice"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("Cookie", "uid=alice; uid=bob")], "user_ambiguous"),
        ([("Cookie", "uid=alice"), ("Cookie", "uid=alice")], "user_ambiguous"),
        ([("Cookie", r'uid="\141lice"')], "user_not_canonical"),
    ],
)
def test_a_routing_cookie_sent_twice_or_escaped_is_refused(headers: Headers, reason: str) -> None:
    assert refusal_of(WITH_COOKIE, "", headers) == (400, reason)


def test_a_routing_key_header_that_is_not_utf8_is_refused_at_admission() -> None:
    """It would reach the registry's batch writer and the backend's SessionInfo."""
    request = request_for("", [("x-shard", "caf\udce9")])
    with pytest.raises(Refusal) as refused:
        routing_key("header:x-shard", ALICE, request, {})
    assert (refused.value.status, refused.value.reason) == (400, "bad_routing_key")
    assert routing_key("header:x-shard", ALICE, request_for("", [("x-shard", "café")]), {}) == (
        "café"
    )


class EncodingRegistry(MemoryRegistry):
    """Encodes every field as Redis does before it stores a batch."""

    async def add_connections(
        self, records: list[ConnectionRecord], ttl_s: float, max_per_user: int
    ) -> set[str]:
        for record in records:
            for value in record.field_values():
                value.encode()  # UnicodeEncodeError, as redis-py raises it
        return await super().add_connections(records, ttl_s, max_per_user)


def record(connection_id: str, routing_key: str) -> ConnectionRecord:
    return ConnectionRecord(connection_id, "alice", "pod-1", routing_key, "websocket", 1.0)


async def test_a_record_the_store_cannot_take_never_sinks_the_batch_it_would_join() -> None:
    registry = EncodingRegistry()
    sessions = SessionRegistry(registry, ttl_s=60, flush_s=60, max_per_user=0)
    results = await asyncio.gather(
        sessions.add(record("c-1", "fine")),
        sessions.add(record("c-2", "caf\udce9")),
        sessions.add(record("c-3", "fine too")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], UnwritableRecord)
    stored = {r.connection_id for r in await registry.connections_of_user("alice")}
    assert stored == {"c-1", "c-3"}
    assert {r.connection_id for r in sessions.records} == {"c-1", "c-3"}


@given(st.text(alphabet="ab=&%+;é 2F", max_size=24))
def test_the_handshake_reads_any_query_as_parse_qsl_does(raw: str) -> None:
    """The first value of each name; percent-decoded only where the query has escapes."""
    expected: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(raw, keep_blank_values=True):
        expected.setdefault(name, value)
    assert handshake_query(request_for(raw)) == expected
