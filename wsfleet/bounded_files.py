"""Read a configuration file only if it is a regular file of a sane size.

A path in a policy may name anything: ``/dev/zero`` would be read forever, a FIFO would
block, a 20 MB file would stall the process that parses it. Every file wsfleet reads
from configuration goes through :func:`read_bounded`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class UnreadableFile(Exception):
    """Not a regular file, too large, or not readable; ``str()`` says which."""


def read_bounded(path: Path, limit: int) -> bytes:
    """The file's bytes; raises :class:`UnreadableFile` unless it is a regular file of at
    most ``limit`` bytes (checked before reading, and while reading: files grow)."""
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise UnreadableFile("not a regular file")
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise UnreadableFile("file not found") from None
    except IsADirectoryError:
        raise UnreadableFile("not a regular file") from None
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise UnreadableFile(f"larger than {limit:,} bytes")
    return data
