"""Channel names: what is a valid one, which namespace it is in, which patterns allow it.

A channel is 1 to 255 characters from ``A-Z a-z 0-9 _ - . : @ = , / + # ~ !``; the part
before the first ``:`` is its namespace (none: the default namespace). The set has no
``{`` or ``}`` (a name is a Redis Cluster hash tag as it is), no ``*``, ``?`` or ``[``
(patterns), no space and nothing outside ASCII.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_CHANNEL_LENGTH = 255
CHANNEL_CHARACTERS = "A-Z a-z 0-9 _ - . : @ = , / + # ~ !"
_CHANNEL = re.compile(rf"[A-Za-z0-9_.:@=,/+#~!-]{{1,{MAX_CHANNEL_LENGTH}}}")
_PATTERN = re.compile(rf"[A-Za-z0-9_.:@=,/+#~!*-]{{1,{MAX_CHANNEL_LENGTH}}}")


class BadChannel(ValueError):
    """A channel name (or pattern) that breaks the rules; the message says which."""


def check_channel(name: object) -> str:
    """``name`` if it is a valid channel name, else :class:`BadChannel` saying why."""
    if not isinstance(name, str):
        raise BadChannel("a channel name is a string")
    if _CHANNEL.fullmatch(name) is None:
        if not name:
            raise BadChannel("a channel name is not empty")
        if len(name) > MAX_CHANNEL_LENGTH:
            raise BadChannel(f"a channel name has at most {MAX_CHANNEL_LENGTH} characters")
        raise BadChannel(f"a channel name has only the characters {CHANNEL_CHARACTERS}")
    return name


def namespace_of(channel: str) -> str:
    """The namespace of a (valid) channel: what comes before the first ``:``, or ``""``."""
    namespace, separator, _ = channel.partition(":")
    return namespace if separator else ""


def check_pattern(pattern: object) -> str:
    """A channel pattern (``*`` matches any run of characters), or :class:`BadChannel`."""
    if not isinstance(pattern, str) or _PATTERN.fullmatch(pattern) is None:
        raise BadChannel(f"{pattern!r} is not a channel pattern")
    return pattern


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching any of ``patterns`` (None: none given). Patterns
    come from verified tokens; a malformed one is skipped, never widened."""
    parts = []
    for pattern in patterns:
        if isinstance(pattern, str) and _PATTERN.fullmatch(pattern):
            parts.append(".*".join(re.escape(piece) for piece in pattern.split("*")))
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


def allowed_by(patterns: re.Pattern[str] | None, channel: str) -> bool:
    return patterns is not None and patterns.fullmatch(channel) is not None


__all__ = [
    "CHANNEL_CHARACTERS",
    "MAX_CHANNEL_LENGTH",
    "BadChannel",
    "allowed_by",
    "check_channel",
    "check_pattern",
    "compile_patterns",
    "namespace_of",
]
