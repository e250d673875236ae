"""The server API over HTTP: ``POST /api/<method>`` with a JSON body and an API key.

Each call is checked (:mod:`server_api.calls`), allowed by its key's scopes
(:mod:`server_api.keys`) and carried out as one Redis operation: publications of the
calls that arrive together share one round trip; a command for a user's sessions is one
script call that reaches the gateways holding them. See docs/channels.md and
docs/openapi/server-api.yaml.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from server_api.calls import (
    METHODS,
    BadCall,
    Broadcast,
    Call,
    Disconnect,
    HistoryQuery,
    PresenceQuery,
    Publish,
    Send,
    Subscription,
    parse_call,
)
from server_api.keys import ApiKeys
from server_api.metrics import ApiMetrics
from wsfleet.channels.batched import BatchedCalls
from wsfleet.channels.messages import Command, CommandOp, Publication
from wsfleet.channels.namespaces import NamespaceOptions, Namespaces
from wsfleet.channels.store import (
    ChannelStore,
    ChannelStoreUnavailable,
    HistoryRequest,
    Position,
    PublishRequest,
)

log = structlog.get_logger()


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message

    def response(self) -> web.Response:
        return web.json_response({"error": self.error, "message": self.message}, status=self.status)


class ServerApi:
    def __init__(
        self,
        keys: ApiKeys,
        store: ChannelStore,
        publisher: BatchedCalls[PublishRequest, Position],
        namespaces: Callable[[], Namespaces | None],
        metrics: ApiMetrics,
    ) -> None:
        self._keys = keys
        self._store = store
        self._publisher = publisher
        self._namespaces = namespaces
        self._metrics = metrics

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        started = time.perf_counter()
        try:
            response = await self._call(request, method)
        except ApiError as refused:
            response = refused.response()
        known = method if method in METHODS else "unknown"
        self._metrics.calls.labels(known, str(response.status)).inc()
        self._metrics.latency.labels(known).observe(time.perf_counter() - started)
        return response

    async def _call(self, request: web.Request, method: str) -> web.Response:
        key = self._keys.find(request.headers.get("Authorization", ""))
        if key is None:
            raise ApiError(
                401, "unauthorized", "a known API key is needed: Authorization: Bearer <key>"
            )
        if method not in METHODS:
            raise ApiError(
                404,
                "unknown_method",
                f"no method {method[:64]!r}; see docs/openapi/server-api.yaml",
            )
        scope, _ = METHODS[method]
        if not key.allows(scope):
            raise ApiError(403, "forbidden", f"the key {key.name!r} lacks the scope {scope!r}")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(
                413, "too_big", f"the body is larger than {request.client_max_size} bytes"
            ) from None
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "bad_request", "the body is not JSON") from None
        try:
            call = parse_call(method, body)
        except BadCall as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        try:
            return web.json_response(await self._carry_out(call))
        except ChannelStoreUnavailable as exc:
            log.warning("api_store_unavailable", method=method, error=str(exc)[:200])
            raise ApiError(
                503, "unavailable", "the fleet's Redis cannot be reached: try again"
            ) from None

    async def _carry_out(self, call: Call) -> dict[str, Any]:
        if isinstance(call, Publish):
            position = await self._publisher.call(
                self._publication(call.channel, call.payload.data, call.payload.binary)
            )
            return {"offset": position.offset, "epoch": position.epoch}
        if isinstance(call, Broadcast):
            requests = [
                self._publication(c, call.payload.data, call.payload.binary) for c in call.channels
            ]
            results: list[dict[str, object]] = []
            for channel, outcome in zip(
                call.channels, await self._store.publish(requests), strict=True
            ):
                if isinstance(outcome, ChannelStoreUnavailable):
                    results.append({"channel": channel, "error": "unavailable"})
                else:
                    results.append(
                        {"channel": channel, "offset": outcome.offset, "epoch": outcome.epoch}
                    )
            return {"results": results}
        if isinstance(call, Send):
            command = Command(
                "send", call.user, call.session, data=call.payload.data, binary=call.payload.binary
            )
            return {"gateways": await self._store.command_user(call.user, command.encode())}
        if isinstance(call, Subscription):
            self._options(call.channel)  # an unknown namespace is refused here, not on a gateway
            op: CommandOp = "subscribe" if call.subscribe else "unsubscribe"
            command = Command(op, call.user, call.session, channel=call.channel)
            return {"gateways": await self._store.command_user(call.user, command.encode())}
        if isinstance(call, Disconnect):
            command = Command(
                "disconnect", call.user, call.session, code=call.code, reason=call.reason
            )
            return {"gateways": await self._store.command_user(call.user, command.encode())}
        if isinstance(call, PresenceQuery):
            if not self._options(call.channel).presence:
                raise ApiError(
                    400, "bad_request", f"{call.channel} keeps no presence (its namespace)"
                )
            if call.stats:
                clients, users = await self._store.presence_stats(call.channel)
                return {"clients": clients, "users": users}
            entries = await self._store.presence(call.channel)
            return {"clients": [json.loads(entry) for entry in entries]}
        return await self._history(call)

    def _options(self, channel: str) -> NamespaceOptions:
        namespaces = self._namespaces()
        if namespaces is None:
            raise ApiError(
                503, "unavailable", "the channel namespaces are not known yet (no control plane?)"
            )
        options = namespaces.options_for(channel)
        if options is None:
            raise ApiError(
                400,
                "unknown_namespace",
                f"no namespace {channel.partition(':')[0]!r} in the policy",
            )
        return options

    def _publication(self, channel: str, data: bytes, binary: bool) -> PublishRequest:
        options = self._options(channel)
        if len(data) > options.max_publication_bytes:
            raise ApiError(
                413,
                "too_big",
                f"a publication to {channel} has at most {options.max_publication_bytes} bytes",
            )
        return PublishRequest(
            channel,
            data,
            binary,
            b"",
            options.history_size,
            options.history_ttl_s,
            published_at=time.time(),
        )

    async def _history(self, call: HistoryQuery) -> dict[str, Any]:
        options = self._options(call.channel)
        if not options.recoverable:
            raise ApiError(400, "bad_request", f"{call.channel} keeps no history (its namespace)")
        after = call.after if call.after is not None else 0
        [history] = await self._store.history(
            [HistoryRequest(call.channel, after, options.history_size, options.history_ttl_s)]
        )
        if isinstance(history, ChannelStoreUnavailable):
            raise history
        position = history.position
        publications = history.publications
        complete = (
            call.after is not None
            and call.epoch == position.epoch
            and history.reaches_back_to(after)
        )
        chosen = (
            publications[: call.limit] if call.after is not None else publications[-call.limit :]
        )
        return {
            "publications": [_publication_json(p) for p in chosen],
            "epoch": position.epoch,
            "offset": position.offset,
            "complete": complete,
        }


def _publication_json(publication: Publication) -> dict[str, Any]:
    item: dict[str, Any] = {"offset": publication.offset}
    if publication.binary:
        item["data_b64"] = base64.b64encode(publication.data).decode()
    else:
        item["data"] = publication.data.decode("utf-8", errors="replace")
    if publication.info:
        item["info"] = json.loads(publication.info)
    return item
