"""Write to a temporary name beside the target, then rename: no partial output ever remains."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["atomic_output", "full_suffix"]


def full_suffix(path: Path) -> str:
    """ ".nii.gz", ".ome.zarr", ".nrrd": the suffixes that name the format."""
    name = path.name.lower()
    for double in (".nii.gz", ".ome.zarr"):
        if name.endswith(double):
            return path.name[-len(double) :]
    return path.suffix


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(final_path: str | os.PathLike):
    """Yield a temporary path (same folder, same format suffix); rename it to ``final_path`` on success.

    On any error the temporary file or folder is removed and ``final_path`` is left as it was.
    Works for files and for folder formats (zarr).
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = full_suffix(final)
    stem = final.name[: len(final.name) - len(suffix)] if suffix else final.name
    tmp = final.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        if tmp.is_dir() and final.exists():
            backup = final.with_name(f".{stem}.old-{uuid.uuid4().hex[:8]}{suffix}")
            os.replace(final, backup)
            os.replace(tmp, final)
            _remove(backup)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
