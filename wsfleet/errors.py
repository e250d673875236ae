"""Errors a user sees. Each carries a sentence that says what went wrong.

Exit codes of the ``wsfleet`` command (docs/local-fleet.md lists them too):
0 done; 1 the operation failed or was refused (the server's reason is printed);
2 a bad command line, setting or file; 3 a part of the fleet could not start;
4 the fleet (control plane or launcher) cannot be reached; 130 interrupted.
"""


class WsfleetError(Exception):
    """Base for errors that end a command with a one-line message and exit code != 0."""

    exit_code = 1


class ConfigError(WsfleetError):
    """A setting, flag or file is wrong: the message names which and why."""

    exit_code = 2


class StartupError(WsfleetError):
    """A part of the fleet could not start (port in use, Redis unreachable, ...)."""

    exit_code = 3


class UnreachableError(WsfleetError):
    """The control plane or the launcher does not answer where it should."""

    exit_code = 4
