"""JIT options and the thread fan-out in one place.

fastmath stays off: BMD must be reproducible bit for bit. No kernel uses numba's ``parallel=True``:
loading a cached parallel kernel costs about 0.8 s per process (numba's parfors machinery and its
threading layer), more than the work it splits on a typical scan. Kernels that gain from several
cores are written for a range of their outer loop, compiled with ``nogil=True``, and run on Python
threads by :func:`run_in_chunks`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numba

JIT = dict(cache=True, nogil=True, fastmath=False)

#: Below this many voxels of work a kernel runs on the calling thread (threads would cost more).
MIN_VOXELS_PER_THREAD = 2_000_000


def njit(**options):
    """``numba.njit`` with the project's options; plain Python under NUMBA_DISABLE_JIT=1."""
    return numba.njit(**{**JIT, **options})


def run_in_chunks(kernel, n_items: int, voxels_per_item: int, *args) -> None:
    """Call ``kernel(*args, start, stop)`` over ``range(n_items)`` split into contiguous chunks, one
    per CPU core when the work is large enough, else once on the calling thread. The kernel must
    release the GIL (``nogil=True``) and write only to its own items."""
    n_threads = min(os.cpu_count() or 1, n_items, max(1, (n_items * voxels_per_item) // MIN_VOXELS_PER_THREAD))
    if n_threads <= 1:
        kernel(*args, 0, n_items)
        return
    bounds = [round(i * n_items / n_threads) for i in range(n_threads + 1)]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        chunks = [(*args, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        for future in [pool.submit(kernel, *chunk) for chunk in chunks]:
            future.result()
