"""Structured logging: one JSON object per line on stderr, with bound context.

Every process calls :func:`configure` once at start with its component name;
modules then use ``structlog.get_logger()`` and ``log.bind(connection_id=...)``.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure(component: str, level: str = "info", json_output: bool = True) -> None:
    """Route structlog output to stderr as JSON lines tagged with ``component``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component)
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
