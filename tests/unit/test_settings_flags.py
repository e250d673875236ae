"""Every process setting has one definition: its flag and its ``WSFLEET_…`` variable are
made from the field, checked once at start, flag over variable over default."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

from wsfleet.settings import BackendSettings, SidecarSettings, XdsSettings
from wsfleet.settings_flags import (
    SettingsError,
    add_flags,
    env_name,
    flag_name,
    from_args,
)

ALL = (SidecarSettings, XdsSettings, BackendSettings)


def parser_for(cls: type[Any]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_flags(parser, cls)
    return parser


def sample(field: dataclasses.Field[Any], hint: Any) -> tuple[list[str], Any]:
    """A command line that sets ``field`` to something other than its default, and the
    value the settings should then hold."""
    flag = flag_name(field)
    choices = field.metadata.get("choices")
    text = str(hint)
    if choices:
        value = next(c for c in choices if c != field.default)
        return [flag, value], value
    if "bool" in text:
        return [flag], not field.default
    if "tuple" in text:
        return [flag, "a:1", flag, "b:2"], ("a:1", "b:2")
    if field.name == "routing_key_source":
        return [flag, "claim:tenant"], "claim:tenant"
    if field.name == "redis_url":
        return [flag, "redis+cluster://h1:7000,h2:7001"], "redis+cluster://h1:7000,h2:7001"
    if "Path" in text:
        return [flag, "/tmp/some-file"], Path("/tmp/some-file")
    if "float" in text:
        return [flag, "0.5"], 0.5
    if "int" in text:
        return [flag, "7"], 7
    return [flag, "some-text"], "some-text"


REQUIRED_VALUES = {
    SidecarSettings: {"redis_url": ["--redis-url", "redis://r"], "backends": ["--backend", "b:1"]},
    XdsSettings: {"redis_url": ["--redis-url", "redis://r"]},
    BackendSettings: {},
}


def required_but(cls: type[Any], name: str = "") -> list[str]:
    """The required flags, less the one of the field ``name``."""
    return [
        item for field, flags in REQUIRED_VALUES[cls].items() if field != name for item in flags
    ]


REQUIRED = {cls: required_but(cls) for cls in ALL}


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_every_field_is_set_by_its_own_flag(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    flags = set()
    for field in dataclasses.fields(cls):
        argv, expected = sample(field, hints[field.name])
        flags.add(flag_name(field))
        args = parser_for(cls).parse_args([*required_but(cls, field.name), *argv])
        settings = from_args(cls, args, environ={})
        assert getattr(settings, field.name) == expected, field.name
    assert len(flags) == len(dataclasses.fields(cls))  # one flag each, no two alike


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_every_field_is_set_by_its_environment_variable(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        _, expected = sample(field, hints[field.name])
        if isinstance(expected, bool):
            text = "true" if expected else "false"
        elif isinstance(expected, tuple):
            text = ",".join(expected)
        else:
            text = str(expected)
        args = parser_for(cls).parse_args(required_but(cls, field.name))
        settings = from_args(cls, args, environ={env_name(field): text})
        assert getattr(settings, field.name) == expected, field.name


def test_a_flag_wins_over_its_variable_which_wins_over_the_default() -> None:
    parser = parser_for(SidecarSettings)
    environ = {"WSFLEET_HEARTBEAT_INTERVAL_S": "12", "WSFLEET_POOL": "blue"}
    args = parser.parse_args([*REQUIRED[SidecarSettings], "--heartbeat-interval", "3"])
    settings = from_args(SidecarSettings, args, environ=environ)
    assert settings.heartbeat_interval_s == 3.0  # the flag
    assert settings.pool == "blue"  # the variable
    assert (
        settings.heartbeat_timeout_s
        == SidecarSettings.__dataclass_fields__["heartbeat_timeout_s"].default
    )  # the default


@pytest.mark.parametrize(
    ("variable", "text", "problem"),
    [
        ("WSFLEET_HEARTBEAT_INTERVAL_S", "soon", "'soon' is not a number"),
        ("WSFLEET_HEARTBEAT_INTERVAL_S", "-1", "not positive"),
        ("WSFLEET_PORT", "70000", "port must be 0-65535"),
        ("WSFLEET_ROUTING_KEY_SOURCE", "claim:", "not a routing key source"),
        ("WSFLEET_RATE_LIMIT_ACTION", "ignore", "not one of close, drop"),
        ("WSFLEET_COMPRESSION", "maybe", "is not one of"),
        ("WSFLEET_HEARTBEAT_JITTER", "1.5", "not a fraction"),
    ],
)
def test_a_bad_variable_is_refused_at_start_naming_it(
    variable: str, text: str, problem: str
) -> None:
    args = parser_for(SidecarSettings).parse_args(REQUIRED[SidecarSettings])
    with pytest.raises(SettingsError, match=problem) as refused:
        from_args(SidecarSettings, args, environ={variable: text})
    assert variable in str(refused.value)


def test_a_bad_flag_is_refused_by_the_parser() -> None:
    with pytest.raises(argparse.ArgumentError, match="not a positive whole number"):
        parser_for(SidecarSettings).parse_args(["--send-queue-bytes", "0"])


def test_a_missing_required_setting_names_its_flag_and_variable() -> None:
    args = parser_for(SidecarSettings).parse_args(["--backend", "b:1"])
    with pytest.raises(SettingsError, match=r"--redis-url \(or WSFLEET_REDIS_URL\)"):
        from_args(SidecarSettings, args, environ={})


def test_the_flags_that_scripts_and_docs_use_keep_their_names() -> None:
    parser = parser_for(SidecarSettings)
    args = parser.parse_args(
        [
            *REQUIRED[SidecarSettings],
            *("--routing-key", "header:x-tenant", "--subprotocol", "chat.v2"),
            *("--messages-per-second", "10", "--bytes-per-second", "2048"),
            *("--no-compression", "--slow-consumer-grace", "1", "--drain-budget", "4"),
        ]
    )
    settings = from_args(SidecarSettings, args, environ={})
    assert settings.routing_key_source == "header:x-tenant"
    assert settings.subprotocols == ("chat.v2",)
    assert (settings.messages_per_s, settings.bytes_per_s) == (10.0, 2048.0)
    assert settings.compression is False
    assert (settings.slow_consumer_grace_s, settings.drain_budget_s) == (1.0, 4.0)
    xds_args = parser_for(XdsSettings).parse_args(
        ["--redis-url", "redis://r", "--policy", "p.yaml"]
    )
    assert from_args(XdsSettings, xds_args, environ={}).policy_path == Path("p.yaml")
