"""Command-line flags and environment variables, made from a settings dataclass's fields.

A field declares itself once, with :func:`setting` (its default, help, group, check and,
when the derived one does not fit, its flag); :func:`add_flags` makes the flags and
:func:`from_args` builds the settings, taking each value from its flag, else from its
environment variable (``WSFLEET_`` + the field's name in capitals, e.g.
``WSFLEET_HEARTBEAT_INTERVAL_S``), else the default. Flag and environment values go
through the same check, once, at start: a bad one is refused with a message naming it.

- ``heartbeat_interval_s`` -> ``--heartbeat-interval`` (a unit suffix ``_s`` is dropped);
- a ``bool`` that defaults to True -> ``--no-NAME``; to False -> ``--NAME``;
- a ``tuple[str, ...]`` -> a flag given once per item (its environment variable: items
  separated by commas).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from wsfleet.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

ENV_PREFIX = "WSFLEET_"
T = TypeVar("T", bound="DataclassInstance")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    group: str,
    check: Callable[[str], Any] | None = None,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A settings field: its default (or ``factory``), what it means, the group it is
    listed under, how a text value is checked and converted, and its flag if the derived
    one does not fit."""
    metadata = {"help": help, "group": group, "check": check, "flag": flag, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def env_name(field: dataclasses.Field[Any]) -> str:
    return ENV_PREFIX + field.name.upper()


def flag_name(field: dataclasses.Field[Any]) -> str:
    explicit = field.metadata.get("flag")
    if explicit:
        return str(explicit)
    name = field.name.removesuffix("_s").replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def add_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """One flag per field of ``cls``, listed by group, each with its help, default and
    environment variable."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(cls):
        if "group" not in field.metadata:
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with setting()")
        group_name = field.metadata["group"]
        group = groups.get(group_name) or parser.add_argument_group(group_name)
        groups[group_name] = group
        kind = _kind(hints[field.name])
        flag = flag_name(field)
        help_text = _help(field)
        if kind is bool:
            action = "store_false" if field.default is True else "store_true"
            group.add_argument(flag, action=action, default=None, dest=field.name, help=help_text)
        elif kind is tuple:
            group.add_argument(
                flag,
                action="append",
                default=None,
                dest=field.name,
                help=help_text,
                type=_checker(field, str),
                metavar=flag.removeprefix("--").replace("-", "_").upper(),
            )
        else:
            group.add_argument(
                flag,
                default=None,
                dest=field.name,
                help=help_text,
                type=_checker(field, kind),
                choices=field.metadata.get("choices"),
                metavar="PATH"
                if kind is Path
                else flag.removeprefix("--").replace("-", "_").upper(),
            )


def from_args(cls: type[T], args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> T:
    """The settings: each field from its flag, else its environment variable, else its
    default. Raises :class:`SettingsError` naming a bad or missing value."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        given = getattr(args, field.name, None)
        kind = _kind(hints[field.name])
        if given is not None:
            values[field.name] = tuple(given) if kind is tuple else given
            continue
        text = environ.get(env_name(field))
        if text is not None:
            values[field.name] = _from_env(field, kind, text)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{flag_name(field)} (or {env_name(field)}) is required")
    return cls(**values)


class SettingsError(ConfigError):
    """A setting that is missing or not what its field needs."""


def _kind(hint: Any) -> type[Any]:
    """The field's value type, ``X | None`` read as ``X``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple
    if hint in (bool, int, float, str, Path):
        return typing.cast(type[Any], hint)
    raise TypeError(f"no flag for a field of type {hint!r}")


def _checker(field: dataclasses.Field[Any], kind: type[Any]) -> Callable[[str], Any]:
    check = field.metadata.get("check")
    return check if check is not None else kind


def _from_env(field: dataclasses.Field[Any], kind: type[Any], text: str) -> Any:
    name = env_name(field)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in _TRUE | _FALSE:
                raise ValueError(f"{text!r} is not one of {sorted(_TRUE | _FALSE)}")
            return lowered in _TRUE
        check = _checker(field, str if kind is tuple else kind)
        if kind is tuple:
            return tuple(check(item.strip()) for item in text.split(",") if item.strip())
        value = check(text)
        choices = field.metadata.get("choices")
        if choices and value not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return value
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _help(field: dataclasses.Field[Any]) -> str:
    text = str(field.metadata["help"]).replace("%", "%%")
    notes = []
    default = field.default
    if default is not dataclasses.MISSING and default not in (None, (), ""):
        if isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
        notes.append(f"default {shown}")
    notes.append(f"env {env_name(field)}")
    return f"{text} ({'; '.join(notes)})"
