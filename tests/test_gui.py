"""Runs the napari widget tests (tests/gui) in a separate pytest process under Xvfb.

Qt's OpenGL (Mesa llvmpipe) and torch's triton each load their own LLVM; in one process the second
import crashes, so the GUI tests never share a process with the nnU-Net/MONAI tests.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_napari_widget_suite():
    if shutil.which("Xvfb") is None and not os.environ.get("DISPLAY"):
        if os.environ.get("CI"):
            pytest.fail("Xvfb is missing in CI (tools/setup_env.sh installs it)")
        pytest.skip("no display and no Xvfb on this machine")
    here = Path(__file__).resolve().parent
    env = dict(os.environ, VOLBMD_GUI_TESTS="1")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "gui")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=here.parent,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
