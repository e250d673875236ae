"""The Python SDK's HTTP links send a frame again after a 429 (the gateway took nothing of
that POST), waiting its Retry-After, a bounded number of times; other refusals raise."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wsfleet_client import transports
from wsfleet_client.transports import _HttpLink


class _Response:
    def __init__(self, status: int, retry_after: str | None) -> None:
        self.status = status
        self.headers = {} if retry_after is None else {"Retry-After": retry_after}

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Http:
    """Answers POSTs from a script of statuses, remembering each body."""

    def __init__(self, statuses: list[int], retry_after: str | None = "0.01") -> None:
        self.statuses = statuses
        self.retry_after = retry_after
        self.bodies: list[str] = []

    def post(self, url: str, data: str, headers: dict[str, str]) -> _Response:
        self.bodies.append(data)
        return _Response(self.statuses.pop(0), self.retry_after)


def _link(http: _Http) -> _HttpLink:
    link = _HttpLink(http, "http://gw", "/poll", {"user": "u"}, "t")  # type: ignore[arg-type]
    link.session_id = "s"
    return link


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_429_is_sent_again_until_taken() -> None:
    http = _Http([429, 429, 202])
    _run(_link(http).send({"type": "message", "data": "hi"}))
    assert len(http.bodies) == 3 and len(set(http.bodies)) == 1


def test_429s_give_up_after_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    http = _Http([429] * transports.SEND_ATTEMPTS, retry_after=None)
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(transports.asyncio, "sleep", no_wait)
    with pytest.raises(ConnectionError, match="HTTP 429"):
        _run(_link(http).send({"type": "message", "data": "hi"}))
    assert len(http.bodies) == transports.SEND_ATTEMPTS
    assert waits == [1.0] * (transports.SEND_ATTEMPTS - 1)  # no Retry-After: a second


def test_other_refusals_raise_at_once() -> None:
    http = _Http([413, 202])
    with pytest.raises(ConnectionError, match="HTTP 413"):
        _run(_link(http).send({"type": "message", "data": "x" * 10}))
    assert len(http.bodies) == 1
