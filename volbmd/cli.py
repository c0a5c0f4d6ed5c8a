"""The ``volbmd`` command line (Typer). Thin: parse, call the library, print.

Expected problems (:class:`volbmd.errors.VolbmdError`) print one line ``volbmd: error: <what>`` on
stderr and exit with code 2; heavy libraries are imported inside the commands that need them.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from volbmd.errors import VolbmdError

app = typer.Typer(
    name="volbmd",
    help="Vertebral bone mineral density from routine CT and MRI scans.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

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


@app.command()
@handles_input_errors
def info(
    scan: Path = typer.Argument(..., help="DICOM folder, .nii/.nii.gz, .nrrd, .mha/.mhd or .zarr"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
    show_phi: bool = typer.Option(False, "--show-phi", help="Also print patient name, ID and dates."),
):
    """Describe a scan: grid, orientation, HU range and scanner metadata."""
    from volbmd.describe import describe_volume
    from volbmd.io import load_volume

    facts = describe_volume(load_volume(scan, series_uid=series), show_phi=show_phi)
    if json_out:
        typer.echo(json.dumps(facts, indent=2, default=str))
        return
    _print_info(facts)


def _fmt_number(v: float) -> str:
    """At most three decimals, at least one: 2.0, 0.977, -249.512."""
    text = f"{v:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _print_info(facts: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(facts["source"]), show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("size (x×y×z)", "×".join(str(n) for n in facts["size_xyz"]) + " voxels")
    table.add_row("spacing (z/y/x)", "/".join(_fmt_number(s) for s in facts["spacing_mm_zyx"]) + " mm")
    table.add_row("field of view (z/y/x)", "/".join(_fmt_number(s) for s in facts["field_of_view_mm_zyx"]) + " mm")
    table.add_row("orientation", facts["orientation"] + (f" (oblique {facts['oblique_deg']}°)" if facts["oblique_deg"] > 0.01 else ""))
    table.add_row("origin (LPS)", ", ".join(_fmt_number(v) for v in facts["origin_lps_mm"]) + " mm")
    lo, hi = facts["value_range"]
    table.add_row("value range", f"{_fmt_number(lo)} to {_fmt_number(hi)} {facts['value_unit']} ({facts['dtype']})")
    for key, value in facts["metadata"].items():
        if value not in (None, [], {}, ""):
            table.add_row(key.replace("_", " "), str(value))
    for key, value in facts.get("phi", {}).items():
        table.add_row(key.replace("_", " "), str(value))
    Console().print(table)


@app.command()
@handles_input_errors
def convert(
    src: Path = typer.Argument(..., help="Any scan volbmd reads."),
    dst: Path = typer.Argument(..., help="Output: .nii, .nii.gz, .nrrd, .mha or .ome.zarr"),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID to read from a DICOM folder."),
):
    """Convert a scan to another format, keeping its grid and voxel values exactly."""
    from volbmd.io import load_volume, write_volume

    volume = load_volume(src, series_uid=series)
    write_volume(volume, dst)
    typer.echo(f"wrote {dst} ({'×'.join(str(n) for n in volume.shape[::-1])} voxels)")


@app.command()
@handles_input_errors
def demo(
    out: Path = typer.Option(Path("volbmd-demo"), "--out", help="Folder for the demo's outputs."),
):
    """Run volbmd on the embedded digital spine phantom (no input needed)."""
    from volbmd.demo import run_demo

    run_demo(out)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
