"""Traces (OpenTelemetry): off unless an OTLP endpoint is set, and then free of I/O on the
hot path (spans are exported in batches by the SDK's background thread).

A process turns tracing on with :func:`configure` (the sidecar and the demo backend do, at
start) when OpenTelemetry's own variable ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set and ``OTEL_SDK_DISABLED`` is not true; the
exporter is the optional ``wsfleet[otlp]`` extra (OTLP over HTTP). Every other
``OTEL_*`` variable (service name, sampler, batch delay, headers) works as the SDK
documents it.

Off, the gateway pays one global read per call: :func:`handshake` and :func:`span` return
a shared do-nothing context manager, :func:`current_carrier` returns None. No SDK tracer
provider is made, so nothing else traces either.

Trace context travels as W3C Trace Context (``traceparent``, ``tracestate``): in from the
client's upgrade request (Envoy passes the header through), out to the backend in the
session's ``SessionOpened.trace_context``, and back into a span in the backend kit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wsfleet.errors import ConfigError

TRACER_NAME = "wsfleet"
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DISABLED_VARIABLE = "OTEL_SDK_DISABLED"
REQUEST_ID_HEADER = "x-request-id"  # Envoy's id of the request (in its access log too)

# Span names and attributes (docs/observability.md lists them)
HANDSHAKE_SPAN = "wsfleet.handshake"
ADMISSION_SPAN = "wsfleet.admission"
AUTH_SPAN = "wsfleet.auth"
REGISTRY_SPAN = "wsfleet.registry_add"
REGISTRY_BATCH_SPAN = "wsfleet.registry_batch"  # one registry write, linked to its handshakes
BACKEND_OPEN_SPAN = "wsfleet.backend.session_open"
TRANSPORT = "wsfleet.transport"
CONNECTION_ID = "wsfleet.connection_id"
SESSION_ID = "wsfleet.session_id"
OUTCOME = "wsfleet.outcome"
REQUEST_ID = "wsfleet.request_id"
BATCH_SIZE = "wsfleet.batch_size"  # connections a registry batch adds (handshakes it answers)
BATCH_REMOVALS = "wsfleet.batch_removals"  # connections it removes

_W3C = TraceContextTextMapPropagator()
_tracer: Tracer | None = None  # set when this process traces


class _Off(AbstractContextManager[Span]):
    """The context manager of every span while tracing is off: one shared object, it
    yields the API's invalid span (whose methods do nothing)."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_OFF = _Off()


def enabled() -> bool:
    """Whether this process traces (:func:`configure` or :func:`install` ran)."""
    return _tracer is not None


def endpoint(environ: Mapping[str, str]) -> str | None:
    """The OTLP endpoint the environment names, or None when tracing stays off."""
    if environ.get(DISABLED_VARIABLE, "").strip().lower() == "true":
        return None
    for name in ENDPOINT_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip()
    return None


def configure(service: str, instance: str = "", environ: Mapping[str, str] = os.environ) -> bool:
    """Trace this process (as ``service``, unless ``OTEL_SERVICE_NAME`` says otherwise;
    ``instance``: its pod id or name) when the environment names an OTLP endpoint; whether
    it does. Raises ConfigError when an endpoint is set but the exporter is not installed."""
    if endpoint(environ) is None:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install 'wsfleet[otlp]'"
        ) from None
    resource = {"service.name": environ.get("OTEL_SERVICE_NAME") or service}
    if instance:
        resource["service.instance.id"] = instance
    install(
        TracerProvider(resource=Resource.create(resource)), BatchSpanProcessor(OTLPSpanExporter())
    )
    return True


def install(provider: TracerProvider, processor: SpanProcessor | None = None) -> None:
    """Make ``provider`` this process's tracer provider (and the global one, so that an
    application's own spans join the same traces); tests pass an in-memory exporter's."""
    global _tracer
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer(TRACER_NAME)


def uninstall() -> None:
    """Tracing off again in this process (tests)."""
    global _tracer
    _tracer = None


# -- the pure parts: W3C trace context in and out --------------------------------------------


def extract(carrier: Mapping[str, str]) -> Context:
    """The trace context a carrier (request headers, ``SessionOpened.trace_context``)
    holds: ``traceparent`` and ``tracestate`` (any case); an empty context when it holds
    none or a malformed one (a new trace then starts)."""
    lowered = {key.lower(): value for key, value in carrier.items() if key.lower() in _FIELDS}
    return _W3C.extract(lowered)


_FIELDS = frozenset(_W3C.fields)


def inject(context: Context | None = None) -> dict[str, str]:
    """The W3C headers of ``context`` (the current one by default); empty when no span is
    in it."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context)
    return carrier


# -- the hot path: nothing when off ------------------------------------------------------------


def handshake(headers: Mapping[str, str], transport: str) -> AbstractContextManager[Span]:
    """The span of one handshake, current inside the ``with`` (so that the admission's
    spans and the backend's session open are its children): it continues the client's
    ``traceparent`` when the request carries one."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    parent = extract(headers) if "traceparent" in headers else None
    attributes: dict[str, Any] = {TRANSPORT: transport}
    request_id = headers.get(REQUEST_ID_HEADER)
    if request_id:
        attributes[REQUEST_ID] = request_id
    return tracer.start_as_current_span(
        HANDSHAKE_SPAN, context=parent, kind=SpanKind.SERVER, attributes=attributes
    )


def span(name: str) -> AbstractContextManager[Span]:
    """A child span of the current one (admission, auth, the registry write)."""
    tracer = _tracer
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name)


def current_link() -> SpanContext | None:
    """The current span's context, for a batch span to link to (the handshakes a batched
    write answers); None when off or when no span is current. Callers check
    :func:`enabled` first, so that nothing is kept per handshake while off."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def batch(name: str, links: list[SpanContext], **attributes: int) -> AbstractContextManager[Span]:
    """The span of one batched write: a root of its own (not a child of whichever
    handshake started the writer task), linked to the spans of the work it carries. None
    when it carries no traced work (a batch of removals only: nobody waits for it)."""
    tracer = _tracer
    if tracer is None or not links:
        return _OFF
    fields = {f"wsfleet.{key}": value for key, value in attributes.items()}
    return tracer.start_as_current_span(
        name, context=Context(), links=[Link(link) for link in links], attributes=fields
    )


def annotate(**attributes: str) -> None:
    """Set ``wsfleet.<name>`` attributes on the current span (the handshake's outcome,
    its connection and session ids)."""
    if _tracer is None:
        return
    current = trace.get_current_span()
    for name, value in attributes.items():
        current.set_attribute(f"wsfleet.{name}", value)


def current_carrier() -> dict[str, str] | None:
    """The current trace context as W3C headers, for the backend; None when off or when
    no span is current."""
    if _tracer is None:
        return None
    return inject() or None


# -- a backend: continue the gateway's trace ---------------------------------------------------


def continued(
    name: str, carrier: Mapping[str, str], **attributes: str
) -> AbstractContextManager[Span]:
    """A span continuing the trace a gateway sent (``SessionOpened.trace_context``), made
    with this process's tracer or, when :func:`configure` did not run, the global one
    (an application that set up OpenTelemetry itself); the API's no-op otherwise, which
    still carries the gateway's trace context to what runs inside. With no trace sent and
    no tracer anywhere, nothing at all (the API's no-op span cost a backend a third of its
    time per session opened)."""
    tracer = _tracer
    if tracer is None:
        if not carrier and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return _OFF
        tracer = trace.get_tracer(TRACER_NAME)
    return _continued(tracer, name, carrier, attributes)


@contextmanager
def _continued(
    tracer: Tracer, name: str, carrier: Mapping[str, str], attributes: Mapping[str, str]
) -> Iterator[Span]:
    parent = extract(carrier) if carrier else None
    fields = {f"wsfleet.{key}": value for key, value in attributes.items()}
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.SERVER, attributes=fields
    ) as current:
        yield current


def trace_ids() -> dict[str, str]:
    """The current span's trace and span ids (hex), for log lines; empty when none."""
    if _tracer is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
