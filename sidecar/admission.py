"""The rules at the door: a handshake is authenticated, checked against the user Envoy
hashed on, given a backend and recorded (with the user's quota) before any upgrade, or
refused with a status and a reason."""

from __future__ import annotations

import contextlib
import http.cookies
import json
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from sidecar.auth import AuthError, Identity, TokenVerifier, find_token
from sidecar.backend_bridge import BackendLink
from sidecar.backends import BackendBridge
from sidecar.core.http_head import RequestHead
from sidecar.session_registry import SessionRegistry, UnwritableRecord
from wsfleet import tracing
from wsfleet.headers import REFUSAL_HEADER
from wsfleet.registry import ConnectionRecord, HashSources, QuotaExceeded, new_connection_id
from wsfleet.settings import SidecarSettings


class Refusal(Exception):
    """A handshake refused before any upgrade: HTTP status + short JSON body."""

    def __init__(self, status: int, reason: str, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s
        self.headers: dict[str, str] = {}  # more headers for the answer

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and JSON body of the refusal."""
        # The reason also travels in a header: WebSocket clients rarely get to read the body
        # of a refused upgrade, and an operator's tools should show it verbatim.
        headers = {**self.headers, REFUSAL_HEADER: f"{self.reason}: {self.message}"}
        if self.retry_after_s:
            headers["Retry-After"] = str(self.retry_after_s)
        headers["Content-Type"] = "application/json; charset=utf-8"
        body = json.dumps({"error": self.reason, "message": self.message}).encode()
        return self.status, headers, body

    def response(self) -> web.Response:
        status, headers, body = self.answer()
        return web.Response(status=status, headers=headers, body=body)


@dataclass(frozen=True, slots=True)
class Admission:
    """A handshake that passed: who, which backend serves them, their registry record."""

    identity: Identity
    record: ConnectionRecord
    link: BackendLink
    subprotocol: str | None
    query: Mapping[str, str]  # the handshake's query (see handshake_query)

    @property
    def connection_id(self) -> str:
        return self.record.connection_id

    @property
    def routing_key(self) -> str:
        return self.record.backend_routing_key


def head_of(request: web.BaseRequest) -> RequestHead:
    """What a handshake reads of a request aiohttp parsed (the SSE and long-poll transports,
    and an upgrade on a connection aiohttp serves)."""
    return RequestHead(
        request.method,
        request.path,
        request.rel_url.raw_query_string,
        (request.version.major, request.version.minor),
        request.headers,
    )


def _may_decode(text: str) -> bool:
    """Whether percent-decoding (``+`` as a space) could change ``text``: without ``%`` or
    ``+`` it reads as it is, and the decoder need not run."""
    return "%" in text or "+" in text


def handshake_query(head: RequestHead) -> dict[str, str]:
    """The request's query, parsed for the handshake only (the first value of each name)."""
    query: dict[str, str] = {}
    raw = head.raw_query
    if _may_decode(raw):
        for name, value in urllib.parse.parse_qsl(raw, keep_blank_values=True):
            query.setdefault(name, value)
        return query
    for pair in raw.split("&"):  # nothing to decode (the usual query): as parse_qsl reads
        if pair:  # it, in a third of its time
            name, _, value = pair.partition("=")
            query.setdefault(name, value)
    return query


def hashed_user(sources: HashSources, head: RequestHead) -> str:
    """The user id Envoy hashed this request on: the first of the pool's hash sources
    present, in Envoy's order (header, query parameter, cookie); "" when none is.

    Raises :class:`Refusal` when the gateway could read the user otherwise than Envoy
    hashed it (a client could then pick its gateway, or be hashed as one user and
    authenticated as another): present sources that name different users, or one sent
    twice (``user_ambiguous``); a value that is not its own canonical text
    (``user_not_canonical``): percent-encoding or ``+`` in the query value (Envoy hashes
    the raw value, a decoder reads another), a quoted cookie with escapes, anything but
    printable UTF-8."""
    found = []
    if sources.header:
        values = head.headers.getall(sources.header, [])
        if len(values) > 1:  # Envoy hashes them all, a reader takes one
            raise Refusal(400, "user_ambiguous", f"the {sources.header} header is sent twice")
        if values:
            found.append(_canonical(values[0], sources.header))
    if sources.query_parameter:
        value = _raw_query_value(head.raw_query, sources.query_parameter)
        if value is not None:
            found.append(_canonical(value, f"?{sources.query_parameter}="))
    if sources.cookie and (value := _cookie(head, sources.cookie)) is not None:
        found.append(_canonical(value, f"cookie {sources.cookie}"))
    if len(set(found)) > 1:
        raise Refusal(400, "user_ambiguous", f"{describe(sources)} name different users")
    return found[0] if found else ""


def _canonical(value: str, source: str) -> str:
    """``value`` if it is printable text (aiohttp reads bytes that are not UTF-8 as lone
    surrogates, which are not printable), else a refusal."""
    if not value.isprintable():
        raise Refusal(
            400, "user_not_canonical", f"the routing user ({source}) must be printable UTF-8"
        )
    return value


def _raw_query_value(raw_query: str, name: str) -> str | None:
    """The value of query parameter ``name`` as Envoy hashes it: found by its raw name,
    taken as it is (not decoded); None when absent. Refused when it is sent twice or
    when decoding would change it (``%61lice`` and ``alice`` hash apart)."""
    value = None
    for pair in raw_query.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        if raw_name != name:
            continue
        if value is not None:
            raise Refusal(400, "user_ambiguous", f"?{name}= is sent twice")
        if _may_decode(raw_value) and urllib.parse.unquote_plus(raw_value) != raw_value:
            raise Refusal(
                400,
                "user_not_canonical",
                f"the routing user (?{name}=) must be sent as it is: no percent-encoding, no '+'",
            )
        value = raw_value
    return value


def describe(sources: HashSources) -> str:
    """``x-user-id, ?user=`` for a header and a query parameter (what a client may send)."""
    names = [sources.header, f"?{sources.query_parameter}=" if sources.query_parameter else None]
    names.append(f"cookie {sources.cookie}" if sources.cookie else None)
    return ", ".join(name for name in names if name)


def _cookie(head: RequestHead, name: str) -> str | None:
    """One cookie, parsed for this handshake only (``request.cookies`` would keep them all),
    as Envoy reads it: from every ``Cookie`` header, its surrounding quotes taken off.
    Refused when it is sent twice or its quoted form holds escapes (Envoy would hash them
    as they are, the parser decodes them)."""
    headers = head.headers.getall("Cookie", [])
    names = (part.partition("=")[0].strip() for line in headers for part in line.split(";"))
    if sum(found == name for found in names) > 1:
        raise Refusal(400, "user_ambiguous", f"cookie {name} is sent twice")
    jar = http.cookies.SimpleCookie()
    with contextlib.suppress(http.cookies.CookieError):
        jar.load("; ".join(headers))
    morsel = jar.get(name)
    if morsel is None:
        return None
    if morsel.coded_value not in (morsel.value, f'"{morsel.value}"'):
        raise Refusal(
            400, "user_not_canonical", f"the routing user (cookie {name}) must hold no escapes"
        )
    return morsel.value


def routing_key(
    source: str, identity: Identity, head: RequestHead, query: Mapping[str, str]
) -> str | None:
    """The session's backend_routing_key, from where the settings say it is; None when it
    is not there. Raises :class:`Refusal` (``bad_routing_key``) when it is not printable
    UTF-8: it is written to the registry and sent to the backend, which take only text."""
    if source == "user":
        return identity.user_id
    kind, _, name = source.partition(":")
    value: object = None
    if kind == "claim":
        value = identity.claims.get(name)
    elif kind == "query":
        value = query.get(name)
    elif kind == "header":
        value = head.headers.get(name)
    if value in (None, ""):
        return None
    key = str(value)
    if not key.isprintable():  # a lone surrogate: bytes that were not UTF-8
        raise Refusal(400, "bad_routing_key", f"the routing key ({source}) is not printable UTF-8")
    return key


def choose_subprotocol(
    offered: list[str], supported: tuple[str, ...], token_entry: str | None
) -> str | None:
    """The first supported application subprotocol the client offered; else echo the token
    entry (a browser that offered subprotocols fails a handshake that selects none)."""
    for protocol in offered:
        if protocol in supported:
            return protocol
    return token_entry


class Gatekeeper:
    """Checks handshakes. Its state: whether the pod is draining (no new sessions) and
    where Envoy hashes this pool's users (from the control plane)."""

    def __init__(
        self,
        settings: SidecarSettings,
        verifier: TokenVerifier,
        bridge: BackendBridge,
        sessions: SessionRegistry,
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self._bridge = bridge
        self._sessions = sessions
        self.draining = False
        self.hash_sources: HashSources | None = None  # the pool's, from the policy

    def authenticate(
        self, head: RequestHead, query: Mapping[str, str]
    ) -> tuple[Identity, str | None]:
        """The verified identity (and the subprotocol entry the token came in, if any);
        raises :class:`Refusal`. The user Envoy hashed on must be the token's subject."""
        try:
            token, token_entry = find_token(head.headers, query)
            identity = self.verifier.verify(token)
        except AuthError as exc:
            raise Refusal(exc.status, exc.reason, exc.message) from None
        sources = self.hash_sources
        if sources is None:
            raise Refusal(
                503,
                "no_hash_key",
                "this gateway has not learned from the control plane where its pool's "
                "users are hashed",
                retry_after_s=1,
            )
        if hashed_user(sources, head) != identity.user_id:
            raise Refusal(
                403,
                "user_mismatch",
                f"the routing user ({describe(sources)}) must equal the token subject",
            )
        return identity, token_entry

    async def admit(self, head: RequestHead, transport: str) -> Admission:
        """Check a handshake; raise :class:`Refusal` with the reason if refused."""
        settings = self.settings
        query = handshake_query(head)
        with tracing.span(tracing.AUTH_SPAN):
            identity, token_entry = self.authenticate(head, query)
        if self.draining:
            raise Refusal(503, "draining", "this gateway is draining", retry_after_s=1)
        key = routing_key(settings.routing_key_source, identity, head, query)
        if key is None:
            raise Refusal(
                400, "no_routing_key", f"no backend routing key ({settings.routing_key_source})"
            )
        link = self._bridge.link_for(key)
        if link is None:
            raise Refusal(503, "no_backend", "no backend is available", retry_after_s=2)
        record = ConnectionRecord(
            connection_id=new_connection_id(identity.user_id),
            user_id=identity.user_id,
            shard=settings.pod_id,
            backend_routing_key=key,
            transport=transport,
            connected_at=time.time(),
        )
        try:
            with tracing.span(tracing.REGISTRY_SPAN):  # the wait for this turn's batch
                await self._sessions.add(record)
        except QuotaExceeded:
            raise Refusal(
                429,
                "user_quota",
                f"user already holds {settings.max_connections_per_user} connections",
                retry_after_s=5,
            ) from None
        except UnwritableRecord as exc:
            raise Refusal(400, "bad_routing_key", str(exc)) from None
        offered = [p.strip() for p in head.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        subprotocol = choose_subprotocol(
            [p for p in offered if p], settings.subprotocols, token_entry
        )
        return Admission(identity, record, link, subprotocol, query)
