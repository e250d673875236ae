"""Structured logging: one JSON object per line on stderr, for every logger of the process.

Every process calls :func:`configure` once at start with its component name; modules then
use ``structlog.get_logger()`` and ``log.bind(connection_id=...)`` (or, for everything a
task logs, ``structlog.contextvars.bind_contextvars``). The standard library's records
(aiohttp, grpc, asyncio, redis, the OpenTelemetry exporter...) go through the same
processors (structlog's ``ProcessorFormatter``): the same JSON, with ``logger`` naming
their source, and any credential in their text redacted (:func:`redact`).

Fields: ``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``component``, the bound
context (``connection_id``, ``session_id``...), ``trace_id`` and ``span_id`` when a span is
current (see :mod:`wsfleet.tracing`), ``logger`` for standard library records, and
``exception`` with the traceback when there is one.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from wsfleet import tracing

# credentials as they may appear in a library's free text: a query parameter (the token
# travels in ``?token=``), an Authorization header's value
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:token|access_token|api_key|key|password|secret)=)[^&\s\"';]*"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the values of credential query parameters and of Bearer/Basic
    credentials replaced by ``[redacted]``."""
    return _BEARER.sub(rf"\1 {REDACTED}", _SECRET_QUERY.sub(rf"\1{REDACTED}", text))


def _redact_text(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Redact a standard library record's text and traceback (wsfleet's own events name
    no secret)."""
    for name in ("event", "exception"):
        value = event_dict.get(name)
        if isinstance(value, str):
            event_dict[name] = redact(value)
    return event_dict


def _add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    if tracing.enabled():
        event_dict.update(tracing.trace_ids())
    return event_dict


def configure(
    component: str, level: str = "info", json_output: bool = True, stream: TextIO | None = None
) -> None:
    """Route structlog's and the standard library's output to stderr (or ``stream``) as
    JSON lines tagged with ``component`` (``json_output=False``: readable lines, for the
    launcher)."""
    out = stream or sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )

    def add_component(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict.setdefault("component", component)  # other threads' records too
        return event_dict

    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_component,
        _add_trace_ids,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _redact_text,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]  # replaces any handler installed before (basicConfig's)
    root.setLevel(max(numeric, logging.WARNING))  # libraries: warnings and worse
    logging.captureWarnings(True)  # warnings.warn too, as JSON (logger py.warnings)
    sys.excepthook = _log_uncaught  # a crash's traceback as one JSON line, not raw text
    threading.excepthook = lambda hook: _log_uncaught(
        hook.exc_type, hook.exc_value, hook.exc_traceback
    )


def _log_uncaught(kind: type[BaseException], value: BaseException | None, tb: Any) -> None:
    if value is None or issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value or kind(), tb)
        return
    logging.getLogger("wsfleet").critical("uncaught_exception", exc_info=(kind, value, tb))
