"""What the CLI's commands share: the ``--state-dir`` option, declared once, and the shape
of a command's ``run`` (every command module registers its parsers with
``set_defaults(run=...)``; :func:`wsfleet_tools.cli.main` just calls it)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from wsfleet.settings import DEFAULT_STATE_DIR

Run = Callable[[argparse.Namespace], None]


def add_state_dir_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--state-dir``: the fleet's keys and run files (``wsfleet up`` writes them, the other
    commands find the fleet there). ``help`` is the line the command shows, if any."""
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=help)


def printing(command: Callable[[argparse.Namespace], str]) -> Run:
    """A ``run`` that prints what ``command`` answers (the operators' commands return text)."""

    def run(args: argparse.Namespace) -> None:
        print(command(args))

    return run
