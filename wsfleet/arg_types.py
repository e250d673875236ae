"""Command-line value types shared by ``wsfleet`` and the benchmarks: a bad value is
refused by argparse with a message that names what it needs (exit status 2)."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    return _int(text, 1, "is not a positive whole number (>= 1)")


def non_negative_int(text: str) -> int:
    return _int(text, 0, "is negative (need >= 0)")


def positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not positive (need > 0)")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value:g} is negative (need >= 0)")
    return value


def fraction(text: str) -> float:
    """A number from 0 to 1, both included."""
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a fraction between 0 and 1")
    return value


def routing_key_source(text: str) -> str:
    """Where a session's backend routing key comes from: ``user``, ``claim:NAME``,
    ``query:NAME`` or ``header:NAME`` (checked once, at start: not on every handshake)."""
    kind, separator, name = text.partition(":")
    if text == "user" or (kind in ("claim", "query", "header") and separator and name):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a routing key source: user, claim:NAME, query:NAME or header:NAME"
    )


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, not {value}")
    return value


def _int(text: str, least: int, problem: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} {problem}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value
