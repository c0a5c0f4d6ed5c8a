"""What every volbmd command shares: expected errors as one line on stderr and exit code 2."""

from __future__ import annotations

import functools

import typer

from volbmd.errors import VolbmdError

__all__ = ["EXIT_BAD_INPUT", "handles_input_errors"]

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    typer.echo(f"volbmd: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def handles_input_errors(func):
    """Turn expected errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except VolbmdError as exc:
            _fail(str(exc))
        except MemoryError:
            _fail("out of memory")

    return wrapper
