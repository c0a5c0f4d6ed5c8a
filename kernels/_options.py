"""JIT options in one place. fastmath stays off: BMD must be reproducible bit for bit."""

from __future__ import annotations

import numba

JIT = dict(cache=True, nogil=True, fastmath=False)
JIT_PARALLEL = dict(JIT, parallel=True)


def njit(**options):
    """``numba.njit`` with the project's options; plain Python under NUMBA_DISABLE_JIT=1."""
    return numba.njit(**{**JIT, **options})
