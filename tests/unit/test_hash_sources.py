"""The gateway checks the user Envoy hashed on, where the policy says Envoy looks (header,
query parameter, cookie, first present wins), and follows the policy when it changes."""

from __future__ import annotations

import urllib.parse

import pytest
from aiohttp.test_utils import make_mocked_request

from sidecar.admission import Refusal, hashed_user, head_of
from sidecar.hash_sources import HashSourcesFollower
from wsfleet.registry import HashSources, RegistryUnavailable
from wsfleet.registry.memory import MemoryRegistry

ALL = HashSources(header="x-account", query_parameter="account", cookie="acct")


def user_of(sources: HashSources, headers: dict[str, str], query: dict[str, str]) -> str:
    request = make_mocked_request("GET", f"/ws?{urllib.parse.urlencode(query)}", headers=headers)
    return hashed_user(sources, head_of(request))


def test_the_first_source_present_is_the_hashed_user_in_envoys_order() -> None:
    assert user_of(ALL, {"x-account": "alice"}, {}) == "alice"
    assert user_of(ALL, {}, {"account": "alice"}) == "alice"
    assert user_of(ALL, {"Cookie": "theme=dark; acct=alice"}, {}) == "alice"
    assert user_of(ALL, {"x-account": "alice"}, {"account": "alice"}) == "alice"
    assert user_of(ALL, {}, {}) == ""  # nothing to hash on: no user matches


def test_only_the_policys_sources_count() -> None:
    query_only = HashSources(query_parameter="account")
    # a header the policy does not name is not what Envoy hashed
    assert user_of(query_only, {"x-user-id": "alice"}, {"account": "bob"}) == "bob"
    assert user_of(query_only, {"x-account": "alice"}, {}) == ""
    assert user_of(HashSources(header="x-user-id"), {}, {"user": "alice"}) == ""


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"x-account": "alice"}, {"account": "mallory"}),
        ({"Cookie": "acct=mallory"}, {"account": "alice"}),
    ],
)
def test_sources_that_name_different_users_are_refused(
    headers: dict[str, str], query: dict[str, str]
) -> None:
    with pytest.raises(Refusal) as refused:
        user_of(ALL, headers, query)
    assert (refused.value.status, refused.value.reason) == (400, "user_ambiguous")


@pytest.mark.parametrize("cookie", ["=;=;acct", "acct", 'acct="unterminated'])
def test_a_broken_cookie_header_names_nobody(cookie: str) -> None:
    assert user_of(HashSources(cookie="acct"), {"Cookie": cookie}, {}) == ""


class FlakyRegistry(MemoryRegistry):
    down = False

    async def get_hash_sources(self, pool: str) -> HashSources | None:
        if self.down:
            raise RegistryUnavailable("down")
        return await super().get_hash_sources(pool)


async def test_the_follower_applies_the_pools_sources_when_they_change() -> None:
    registry = FlakyRegistry()
    applied: list[HashSources] = []
    follower = HashSourcesFollower(registry, "gateways", applied.append, every_s=60)
    await follower.refresh()
    assert applied == [] and follower.current is None  # nothing said yet
    await registry.put_hash_sources({"gateways": HashSources(query_parameter="user")})
    await follower.refresh()
    await follower.refresh()  # unchanged: not applied again
    assert applied == [HashSources(query_parameter="user")]
    await registry.put_hash_sources({"gateways": HashSources(header="x-account")})
    await registry.put_hash_sources({"other-pool": HashSources(cookie="c")})
    await follower.refresh()
    assert applied[-1] == HashSources(header="x-account")
    registry.down = True
    await follower.refresh()  # the registry is away: what was known stays
    assert follower.current == HashSources(header="x-account") and len(applied) == 2
