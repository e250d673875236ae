"""The CLI is one table: every command registers its parser and its ``run``, and
``wsfleet`` only calls it (no command is dispatched by name)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from wsfleet.settings import DEFAULT_STATE_DIR
from wsfleet_tools import cli
from wsfleet_tools.cli import build_parser


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every runnable command line: the commands without a required subcommand."""
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _leaves(sub, (*path, name))
            if action.required:
                return found
    return [path, *found]


def _parser_of(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    return parser


LEAVES = [leaf for leaf in _leaves(build_parser()) if leaf]


def test_the_table_reaches_every_command() -> None:
    names = {leaf[0] for leaf in LEAVES}
    assert {"up", "token", "keygen", "connect", "pods", "rollout", "capacity"} <= names
    assert {"backend", "envoy", "faultproxy", "xds", "sidecar", "api", "status"} <= names
    assert ("policy", "validate") in LEAVES and ("policy", "diff") in LEAVES


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_registers_its_run(path: tuple[str, ...]) -> None:
    assert callable(_parser_of(path).get_default("run")), path


def test_dispatch_calls_the_commands_run(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[argparse.Namespace] = []
    args = build_parser().parse_args(["token", "--user", "u"])
    monkeypatch.setattr(args, "run", ran.append)
    cli._dispatch(args)
    assert ran == [args]


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_state_dir_option_is_the_same_option(path: tuple[str, ...]) -> None:
    parser = _parser_of(path)
    for action in parser._actions:
        if "--state-dir" in action.option_strings:
            assert (action.dest, action.type, action.default) == (
                "state_dir",
                Path,
                DEFAULT_STATE_DIR,
            )
