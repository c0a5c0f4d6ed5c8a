"""Errors that volbmd raises for expected problems with the user's input.

The command line turns any :class:`VolbmdError` into a one-line message and exit code 2, without a
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

__all__ = ["VolbmdError", "InputError", "ConfigError", "GeometryError"]


class VolbmdError(Exception):
    """An expected problem with the user's input, reported as ``<source>: <problem>``."""

    def __init__(self, problem: str, source: str | os.PathLike | None = None):
        self.problem = problem
        self.source = None if source is None else str(source)
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class InputError(VolbmdError):
    """A scan, mask or other input file that cannot be used as it is."""


class ConfigError(VolbmdError):
    """A configuration file or value that does not validate."""


class GeometryError(VolbmdError):
    """Grids that do not match, or a geometry volbmd cannot represent."""
