"""Output folders that never mix two scans and never hold half a result.

A run writes into a fresh temporary folder beside the target and swaps it in whole at the end. A run
that fails or is killed leaves the target as it was (and at most a hidden ``.NAME.tmp-*`` folder);
a rerun replaces an earlier result completely, so no file of the previous scan remains. Only folders
that volbmd wrote (they hold :data:`RUN_MARKER`) are ever replaced; anything else that is not empty
is refused, so a mistyped ``--out`` cannot delete a user's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from volbmd.errors import InputError

__all__ = ["RUN_MARKER", "check_output_folder", "check_output_file", "fresh_output_folder"]

#: The file that marks a folder as a volbmd result (it points `volbmd review` at the scan).
RUN_MARKER = ".volbmd_run.json"


def check_writable_ancestor(path: Path, shown: Path) -> None:
    """The nearest existing folder above ``path`` must be a folder volbmd may write into."""
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot create it: '{ancestor}' is a file, not a folder", shown)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into '{ancestor}' (permission denied)", shown)


def check_output_folder(out_dir: str | os.PathLike) -> Path:
    """Refuse, before any analysis, an output folder that cannot be written or must not be replaced.

    Returns the folder as an absolute path.
    """
    shown = Path(out_dir)
    out = shown.absolute()
    if out.exists() and not out.is_dir():
        raise InputError("the output path exists and is a file; give a folder", shown)
    if out.is_dir() and not (out / RUN_MARKER).is_file() and any(out.iterdir()):
        raise InputError(
            "the output folder holds files that are not a volbmd result; give a new or empty folder "
            "(volbmd replaces only its own result folders)",
            shown,
        )
    check_writable_ancestor(out.parent, shown)
    return out


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse, before any analysis, an output file path that cannot be written."""
    shown = Path(path)
    out = shown.absolute()
    if out.is_dir():
        raise InputError("the output path is a folder; give a file name", shown)
    if out.exists() and not os.access(out, os.W_OK):
        raise InputError("the output file exists and cannot be replaced (permission denied)", shown)
    check_writable_ancestor(out.parent, shown)
    return out


@contextlib.contextmanager
def fresh_output_folder(out_dir: str | os.PathLike):
    """Yield a new empty folder beside ``out_dir``; on success it replaces ``out_dir`` whole.

    On any error (or interruption) the temporary folder is removed and ``out_dir`` is untouched.
    """
    out = check_output_folder(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old-{tag}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
