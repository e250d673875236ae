"""Command-line values are checked once, when the command starts, with a message."""

from __future__ import annotations

import pytest

from wsfleet_tools.cli import build_parser


@pytest.mark.parametrize("source", ["user", "claim:tenant", "query:room", "header:x-room"])
def test_each_routing_key_source_is_accepted(source: str) -> None:
    args = build_parser().parse_args(
        ["sidecar", "--redis-url", "redis://x", "--backend", "127.0.0.1:1", "--routing-key", source]
    )
    assert args.routing_key_source == source


@pytest.mark.parametrize("source", ["usr", "claim", "claim:", "cookie:x", ""])
def test_a_bad_routing_key_source_stops_the_command_with_what_it_needs(
    source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(
            [
                "sidecar",
                "--redis-url",
                "redis://x",
                "--backend",
                "127.0.0.1:1",
                "--routing-key",
                source,
            ]
        )
    assert stopped.value.code == 2
    assert "claim:NAME, query:NAME or header:NAME" in capsys.readouterr().err
