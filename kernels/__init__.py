"""Numba kernels of volbmd (installed as ``volbmd_kernels``): EDT and cortical stripping, label
boxes and order statistics, geodesic growth. Each has a plain numpy/scipy reference in the tests."""

from __future__ import annotations

__all__ = ["load_jit"]


def load_jit() -> None:
    """Load numba's compiler machinery and one cached kernel. The first cached kernel a process
    calls costs about half a second (LLVM starting up); the next ones a few milliseconds. Run this
    on a background thread while something that releases the GIL (reading a scan) runs, and the
    cost is hidden."""
    import numpy as np

    from volbmd_kernels.stats import _reduce_bboxes

    _reduce_bboxes(np.zeros((1, 1, 5), np.int64))
