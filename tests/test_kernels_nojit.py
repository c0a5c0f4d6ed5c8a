"""The kernels are plain Python too: their tests pass with NUMBA_DISABLE_JIT=1."""

import os
import subprocess
import sys
from pathlib import Path


def test_kernel_tests_pass_without_jit():
    here = Path(__file__).resolve().parent
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xvfb", str(here / "test_kernels.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
