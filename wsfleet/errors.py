"""Errors a user sees. Each carries a sentence that says what went wrong."""


class WsfleetError(Exception):
    """Base for errors that end a command with a one-line message and exit code != 0."""

    exit_code = 1


class ConfigError(WsfleetError):
    """A setting, flag or file is wrong: the message names which and why."""

    exit_code = 2


class StartupError(WsfleetError):
    """A part of the fleet could not start (port in use, Redis unreachable, ...)."""

    exit_code = 3
