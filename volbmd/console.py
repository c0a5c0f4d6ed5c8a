"""The rich console the command line prints with."""

from __future__ import annotations

import sys

__all__ = ["make_console"]

#: Width when output goes to a file or pipe (logs, batch runs): wide enough that no table is cut.
PIPE_WIDTH = 240


def make_console(stderr: bool = False):
    """A rich console; at a terminal it takes the terminal's width, otherwise :data:`PIPE_WIDTH`."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr) if stream.isatty() else Console(stderr=stderr, width=PIPE_WIDTH)
