"""Reading a volbmd model file: a folder's model.pt or the file itself, loaded by torch with weights
only (no code runs), as a dict; the caller checks the mark of its own kind."""

from __future__ import annotations

import os
from pathlib import Path

from volbmd.errors import InputError

__all__ = ["read_checkpoint"]


def read_checkpoint(path: str | os.PathLike, *, missing: str, what: str) -> tuple[dict, Path]:
    """The checkpoint dict and the file it came from. ``missing`` is the error when there is no
    file; ``what`` names the kind of model in the error for an unreadable one."""
    import torch

    path = Path(path)
    if path.is_dir():  # a model folder from `volbmd train`
        path = path / "model.pt"
    if not path.is_file():
        raise InputError(missing, path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"not {what} (unreadable by torch: {type(exc).__name__})", path) from None
    if not isinstance(checkpoint, dict):
        raise InputError(f"not {what}", path)
    return checkpoint, path
