"""wsfleet.tracing: W3C context in and out, nothing when off, spans that link when on."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from unittest.mock import patch

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span

from sidecar.session_registry import SessionRegistry
from wsfleet import tracing
from wsfleet.registry import ConnectionRecord
from wsfleet.registry.memory import MemoryRegistry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.install(TracerProvider(), SimpleSpanProcessor(memory))
    yield memory
    tracing.uninstall()


def test_extract_reads_a_traceparent_in_any_case() -> None:
    context = get_current_span(tracing.extract({"TraceParent": TRACEPARENT})).get_span_context()
    assert format(context.trace_id, "032x") == TRACE_ID
    assert format(context.span_id, "016x") == PARENT_ID
    assert context.is_remote and context.trace_flags.sampled


@pytest.mark.parametrize("value", ["", "garbage", f"00-{'0' * 32}-{PARENT_ID}-01"])
def test_a_missing_or_malformed_traceparent_gives_no_parent(value: str) -> None:
    context = tracing.extract({"traceparent": value} if value else {})
    assert not get_current_span(context).get_span_context().is_valid


def test_inject_writes_back_what_extract_read() -> None:
    carrier = tracing.inject(tracing.extract({"traceparent": TRACEPARENT, "tracestate": "a=1"}))
    assert carrier == {"traceparent": TRACEPARENT, "tracestate": "a=1"}
    assert tracing.inject(tracing.extract({})) == {}


def test_tracing_is_on_only_with_an_otlp_endpoint() -> None:
    assert tracing.endpoint({}) is None
    assert tracing.endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}) is None
    assert tracing.endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}) == "http://c:4318"
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}
    assert tracing.endpoint(traces_only) == "http://c:4318/v1/traces"
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "True"}
    assert tracing.endpoint(disabled) is None
    assert tracing.configure("wsfleet-test", environ={}) is False
    assert not tracing.enabled()


def test_off_every_call_is_the_shared_no_op() -> None:
    assert not tracing.enabled()
    first = tracing.handshake({"traceparent": TRACEPARENT}, "websocket")
    assert first is tracing.span("x") is tracing.handshake({}, "sse")
    with first as span:
        assert not span.is_recording()
        tracing.annotate(outcome="accepted")
        assert tracing.current_carrier() is None
        assert tracing.trace_ids() == {}


def test_a_handshake_continues_the_clients_trace_and_its_children_nest(
    exporter: InMemorySpanExporter,
) -> None:
    headers = {"traceparent": TRACEPARENT, "x-request-id": "req-1"}
    with tracing.handshake(headers, "websocket"):
        with tracing.span(tracing.ADMISSION_SPAN), tracing.span(tracing.AUTH_SPAN):
            pass
        tracing.annotate(outcome="accepted", connection_id="c1", session_id="s1")
        carrier = tracing.current_carrier()
        ids = tracing.trace_ids()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    handshake = spans[tracing.HANDSHAKE_SPAN]
    assert format(handshake.context.trace_id, "032x") == TRACE_ID == ids["trace_id"]
    assert handshake.parent is not None and format(handshake.parent.span_id, "016x") == PARENT_ID
    assert dict(handshake.attributes or {}) == {
        tracing.TRANSPORT: "websocket",
        tracing.REQUEST_ID: "req-1",
        tracing.OUTCOME: "accepted",
        tracing.CONNECTION_ID: "c1",
        tracing.SESSION_ID: "s1",
    }
    admission, auth = spans[tracing.ADMISSION_SPAN], spans[tracing.AUTH_SPAN]
    assert admission.parent is not None and admission.parent.span_id == handshake.context.span_id
    assert auth.parent is not None and auth.parent.span_id == admission.context.span_id
    # what goes to the backend names the handshake span as the parent
    assert carrier == {"traceparent": f"00-{TRACE_ID}-{ids['span_id']}-01"}
    assert ids["span_id"] == format(handshake.context.span_id, "016x")


def test_a_handshake_without_traceparent_starts_a_trace(exporter: InMemorySpanExporter) -> None:
    with tracing.handshake({}, "poll"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and span.context.is_valid


def test_the_backend_span_is_a_child_of_the_span_the_gateway_sent(
    exporter: InMemorySpanExporter,
) -> None:
    with tracing.continued(tracing.BACKEND_OPEN_SPAN, {"traceparent": TRACEPARENT}, session_id="s"):
        pass
    with tracing.continued(tracing.BACKEND_OPEN_SPAN, {}):
        pass
    continued, fresh = exporter.get_finished_spans()
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert continued.parent is not None and format(continued.parent.span_id, "016x") == PARENT_ID
    assert dict(continued.attributes or {}) == {"wsfleet.session_id": "s"}
    assert fresh.parent is None


@pytest.fixture
def no_tracer_provider() -> Iterator[None]:
    """As in a process where nobody set a tracer provider (OpenTelemetry's is set once)."""
    with patch.object(trace, "_TRACER_PROVIDER", None):
        yield


@pytest.mark.usefixtures("no_tracer_provider")
def test_without_a_tracer_the_backend_span_still_carries_the_gateways_trace() -> None:
    assert not tracing.enabled()
    with tracing.continued(tracing.BACKEND_OPEN_SPAN, {"traceparent": TRACEPARENT}) as span:
        inside = get_current_span().get_span_context()
        assert not span.is_recording()
    assert (format(inside.trace_id, "032x"), format(inside.span_id, "016x")) == (
        TRACE_ID,
        PARENT_ID,
    )
    with tracing.continued(tracing.BACKEND_OPEN_SPAN, {}) as nothing:  # nothing to carry
        assert not get_current_span().get_span_context().is_valid
    assert not nothing.is_recording() and not nothing.get_span_context().is_valid


def test_an_application_tracer_provider_makes_the_backend_span() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with (
        patch.object(trace, "_TRACER_PROVIDER", provider),
        tracing.continued(tracing.BACKEND_OPEN_SPAN, {}, session_id="s"),
    ):
        pass
    (span,) = memory.get_finished_spans()
    assert (span.name, span.parent, dict(span.attributes or {})) == (
        tracing.BACKEND_OPEN_SPAN,
        None,
        {"wsfleet.session_id": "s"},
    )


def _record(connection_id: str) -> ConnectionRecord:
    return ConnectionRecord(connection_id, "ann", "gw-1", "ann", "websocket", 0.0)


async def _add_in_handshakes(sessions: SessionRegistry, ids: list[str]) -> None:
    async def one(connection_id: str) -> None:
        with tracing.handshake({}, "websocket"), tracing.span(tracing.REGISTRY_SPAN):
            await sessions.add(_record(connection_id))

    await asyncio.gather(*(one(connection_id) for connection_id in ids))


async def test_a_registry_batch_is_one_root_span_linked_to_the_handshakes_it_answers(
    exporter: InMemorySpanExporter,
) -> None:
    sessions = SessionRegistry(MemoryRegistry(), ttl_s=60, flush_s=60, max_per_user=0)
    await _add_in_handshakes(sessions, ["c1", "c2"])  # one turn: one batch
    sessions.remove("c1")
    await _add_in_handshakes(sessions, ["c3"])  # the removal goes out with this add
    finished = exporter.get_finished_spans()
    batches = [span for span in finished if span.name == tracing.REGISTRY_BATCH_SPAN]
    waits = [span for span in finished if span.name == tracing.REGISTRY_SPAN]
    assert [dict(batch.attributes or {}) for batch in batches] == [
        {tracing.BATCH_SIZE: 2, tracing.BATCH_REMOVALS: 0},
        {tracing.BATCH_SIZE: 1, tracing.BATCH_REMOVALS: 1},
    ]
    assert all(batch.parent is None for batch in batches)  # not inside one handshake's trace
    linked = [{link.context.span_id for link in batch.links} for batch in batches]
    assert linked == [
        {wait.context.span_id for wait in waits[:2]},
        {waits[2].context.span_id},
    ]
    assert sessions._links == []


async def test_off_a_handshake_leaves_nothing_for_the_registry_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never() -> None:
        raise AssertionError("a span context was read while tracing is off")

    monkeypatch.setattr(tracing, "current_link", never)
    sessions = SessionRegistry(MemoryRegistry(), ttl_s=60, flush_s=60, max_per_user=0)
    links = sessions._links
    await _add_in_handshakes(sessions, [f"c{i}" for i in range(50)])
    assert len(sessions) == 50
    assert sessions._links is links and links == []  # the same empty list: no allocation


async def test_a_batch_of_removals_only_makes_no_span(exporter: InMemorySpanExporter) -> None:
    sessions = SessionRegistry(MemoryRegistry(), ttl_s=60, flush_s=60, max_per_user=0)
    await _add_in_handshakes(sessions, ["c1"])
    exporter.clear()
    sessions.remove("c1")
    assert sessions._writer is not None
    await sessions._writer
    assert len(sessions) == 0 and exporter.get_finished_spans() == ()
