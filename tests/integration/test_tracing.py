"""Traces across a real fleet: Envoy -> gateway handshake -> backend session open.

The gateway and the backend are separate processes, so an in-memory exporter cannot see
their spans: the test runs a tiny OTLP/HTTP receiver (the protocol the processes really
export with, ``OTEL_EXPORTER_OTLP_ENDPOINT``) and decodes what they send.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import until
from wsfleet import tracing
from wsfleet_tools.launcher.ports import free_port

pytestmark = pytest.mark.integration


class Receiver:
    """An OTLP/HTTP trace receiver: every span it is sent, flattened to a dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []

    async def traces(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "name": span.name,
                            "service": resource.get("service.name", ""),
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                            "links": {link.span_id.hex() for link in span.links},
                        }
                    )
        return web.Response(body=b"", content_type="application/x-protobuf")

    def named(self, name: str, **attributes: str) -> list[dict[str, Any]]:
        return [
            span
            for span in self.spans
            if span["name"] == name
            and all(span["attributes"].get(k) == v for k, v in attributes.items())
        ]


def _value(value: Any) -> str | int:
    return value.int_value if value.HasField("int_value") else value.string_value


async def test_a_handshake_is_traced_from_the_client_through_the_gateway_to_the_backend(
    fleet_factory: Callable[..., Coroutine[Any, Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s, not 5 s
    try:
        fleet = await fleet_factory(sidecars=1)
        client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
        token = fleet.token("tracy")
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(
                f"{fleet.client_url}?user=tracy&access_token={token}",
                headers={"traceparent": f"00-{client_trace}-{client_span}-01"},
            )
            await ws.send_str("hello")
            assert (await ws.receive(timeout=10)).data == "hello"
            await ws.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{fleet.client_url}?user=tracy&access_token=not-a-token")
            assert refused.value.status == 401
            # the SSE and poll session opens: traced and timed alike
            base = fleet.client_url.replace("ws", "http", 1).rpartition("/")[0]
            query = f"user=tracy&access_token={token}"
            async with http.get(f"{base}/sse?{query}") as sse:
                assert sse.status == 200
                await sse.content.readuntil(b"\n\n")  # the stream started
            async with http.get(f"{base}/poll?{query}&wait=0") as poll:
                assert poll.status == 200

        def client_trace_has_every_span() -> bool:
            """Each span below in the client's trace: the gateway exports them in batches,
            the children (ended first) possibly before the handshake's own span."""
            spans = [span for span in receiver.spans if span["trace_id"] == client_trace]
            services = {span["service"] for span in spans}
            names = {span["name"] for span in spans}
            wanted = {
                tracing.HANDSHAKE_SPAN,
                tracing.ADMISSION_SPAN,
                tracing.AUTH_SPAN,
                tracing.REGISTRY_SPAN,
                tracing.BACKEND_OPEN_SPAN,
            }
            return services == {"wsfleet-sidecar", "wsfleet-backend"} and wanted <= names

        await until(
            client_trace_has_every_span,
            30,
            "the gateway's and the backend's spans in the client's trace",
        )
        in_trace = [span for span in receiver.spans if span["trace_id"] == client_trace]
        (handshake,) = [s for s in in_trace if s["name"] == tracing.HANDSHAKE_SPAN]
        assert handshake["parent_id"] == client_span  # the client's traceparent, continued
        assert handshake["service"] == "wsfleet-sidecar"
        attributes = handshake["attributes"]
        assert attributes[tracing.OUTCOME] == "accepted"
        assert attributes[tracing.TRANSPORT] == "websocket"
        assert attributes[tracing.CONNECTION_ID] and attributes[tracing.SESSION_ID]
        (admission,) = [s for s in in_trace if s["name"] == tracing.ADMISSION_SPAN]
        assert admission["parent_id"] == handshake["span_id"]
        children = {s["name"] for s in in_trace if s["parent_id"] == admission["span_id"]}
        assert children == {tracing.AUTH_SPAN, tracing.REGISTRY_SPAN}
        (backend,) = [s for s in in_trace if s["name"] == tracing.BACKEND_OPEN_SPAN]
        assert backend["parent_id"] == handshake["span_id"]
        assert backend["attributes"]["wsfleet.session_id"] == attributes[tracing.SESSION_ID]

        await until(
            lambda: any(
                span["attributes"].get(tracing.OUTCOME) not in (None, "accepted")
                for span in receiver.named(tracing.HANDSHAKE_SPAN)
            ),
            30,
            "the refused handshake's span, with its reason",
        )
        # the token never travels in a span
        assert not any(token.encode() in body for body in receiver.bodies)

        def opened(transport: str) -> list[dict[str, Any]]:
            return receiver.named(tracing.HANDSHAKE_SPAN, **{tracing.TRANSPORT: transport})

        await until(lambda: bool(opened("sse") and opened("poll")), 30, "the SSE and poll opens")
        batches = receiver.named(tracing.REGISTRY_BATCH_SPAN)
        for transport in ("sse", "poll"):
            (span,) = opened(transport)
            assert span["attributes"][tracing.OUTCOME] == "accepted"
            assert span["attributes"][tracing.SESSION_ID]
            (admission,) = [
                s
                for s in receiver.named(tracing.ADMISSION_SPAN)
                if s["parent_id"] == span["span_id"]
            ]
            (wait,) = [
                s
                for s in receiver.named(tracing.REGISTRY_SPAN)
                if s["parent_id"] == admission["span_id"]
            ]
            # the registry batch that answered it: its own trace, linked to the wait
            (batch,) = [b for b in batches if wait["span_id"] in b["links"]]
            assert batch["parent_id"] == "" and batch["trace_id"] != span["trace_id"]
            assert batch["attributes"][tracing.BATCH_SIZE] >= 1
        sidecar = next(iter(fleet.info.sidecars.values()))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{sidecar.admin_port}/metrics") as response,
        ):
            text = await response.text()
        for transport in ("websocket", "sse", "poll"):
            series = f'wsfleet_gateway_handshake_seconds_count{{transport="{transport}"}} '
            assert any(
                line.startswith(series) and line != series + "0.0" for line in text.splitlines()
            ), transport
    finally:
        await runner.cleanup()
