"""One JSON format for every logger (wsfleet.logs), and the launcher's view of it."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Iterator

import pytest
import structlog

from wsfleet import logs
from wsfleet_tools.log_view import render


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    hooks = sys.excepthook, threading.excepthook
    stream = io.StringIO()
    logs.configure("sidecar", "info", stream=stream)
    yield stream
    root.handlers, root.level = handlers, level
    sys.excepthook, threading.excepthook = hooks
    logging.captureWarnings(False)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_standard_library_records_are_json_like_structlogs(
    configured: io.StringIO,
) -> None:
    structlog.contextvars.bind_contextvars(connection_id="c1")
    structlog.get_logger().warning("registry_write_failed", operation="add")
    logging.getLogger("aiohttp.server").warning("Error handling request %s", "GET /ws")
    logging.getLogger("grpc").info("below the libraries' level: not shown")
    ours, theirs = _lines(configured)
    assert ours["event"] == "registry_write_failed" and ours["operation"] == "add"
    assert theirs["event"] == "Error handling request GET /ws"
    assert theirs["logger"] == "aiohttp.server"
    for line in (ours, theirs):
        assert line["component"] == "sidecar" and line["level"] == "warning"
        assert line["connection_id"] == "c1" and str(line["timestamp"]).endswith("Z")


def test_a_traceback_and_a_crash_in_a_thread_are_one_json_line(
    configured: io.StringIO,
) -> None:
    try:
        raise ValueError("GET /ws?access_token=secret-value")
    except ValueError:
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    thread = threading.Thread(target=lambda: 1 / 0)
    thread.start()
    thread.join()
    failed, crashed = _lines(configured)
    assert failed["level"] == "error" and "ValueError" in str(failed["exception"])
    assert "secret-value" not in json.dumps(failed)
    assert crashed["event"] == "uncaught_exception" and "ZeroDivisionError" in str(
        crashed["exception"]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /ws?access_token=abc.def-ghi&user=u", "GET /ws?access_token=[redacted]&user=u"),
        ("/ws?user=u&token=t1 HTTP/1.1", "/ws?user=u&token=[redacted] HTTP/1.1"),
        ("Authorization: Bearer eyJ.x.y", "Authorization: Bearer [redacted]"),
        ("/api?key=k&password=p", "/api?key=[redacted]&password=[redacted]"),
        ("nothing secret ?user=u", "nothing secret ?user=u"),
    ],
)
def test_credentials_in_a_librarys_text_are_redacted(text: str, expected: str) -> None:
    assert logs.redact(text) == expected


def test_the_launcher_shows_a_library_record_with_its_logger_and_traceback() -> None:
    line = json.dumps(
        {
            "event": "Error handling request",
            "level": "error",
            "timestamp": "2026-01-02T03:04:05.000000Z",
            "component": "sidecar",
            "logger": "aiohttp.server",
            "connection_id": "c1",
            "exception": "Traceback (most recent call last):\nValueError: bad",
        }
    )
    assert render("sidecar-1", line).splitlines() == [
        "sidecar-1  | 03:04:05 error   [aiohttp.server] Error handling request connection_id=c1",
        "sidecar-1  |   Traceback (most recent call last):",
        "sidecar-1  |   ValueError: bad",
    ]
    assert render("envoy", "[2026] plain text") == "envoy      | [2026] plain text"
